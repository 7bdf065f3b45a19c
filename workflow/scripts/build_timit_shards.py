# Thin entry point for rule build_timit_shards (logic: s3vae.datasets.timit).
from s3vae.datasets.timit import build_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
cfg, split = snakemake.params.cfg, snakemake.wildcards.split
options = {k: cfg[k] for k in ("split_mode", "include_sa", "feature_mean", "feature_std") if k in cfg}
n = build_shard(snakemake.input.root, snakemake.output[0], split, int(snakemake.wildcards.shard), cfg["n_shards"],
                cfg.get(f"n_{split}"), seed=cfg["seed"], **options)
print(f"wrote {snakemake.output[0]}: {n} segments")
