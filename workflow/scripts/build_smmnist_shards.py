# Thin entry point for rule build_smmnist_shards (logic: s3vae.datasets.smmnist).
from s3vae.datasets.smmnist import build_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
cfg, split = snakemake.params.cfg, snakemake.wildcards.split
n = build_shard(snakemake.output[0], split, int(snakemake.wildcards.shard), cfg["n_shards"], cfg[f"n_{split}"],
                frames=cfg["frames"], frame_size=cfg["frame_size"], source=cfg["digits"],
                data_dir="data/raw/mnist", mirror=snakemake.params.mirror or None, seed=cfg["seed"])
print(f"wrote {snakemake.output[0]}: {n} sequences")
