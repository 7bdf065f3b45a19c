# Thin entry point for rule build_fsdd_shards (logic: s3vae.datasets.fsdd).
from s3vae.datasets.fsdd import build_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
cfg, split = snakemake.params.cfg, snakemake.wildcards.split
options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()
           if k in ("digits", "pause_ms", "noise_floor_db", "trim_db", "feature_mean", "feature_std")}
n = build_shard(snakemake.input.recordings, snakemake.output[0], split, int(snakemake.wildcards.shard),
                cfg["n_shards"], cfg[f"n_{split}"], seed=cfg["seed"], **options)
print(f"wrote {snakemake.output[0]}: {n} segments")
