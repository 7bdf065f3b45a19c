# Thin entry point for rule build_sprites_shards (logic: s3vae.datasets.sprites).
from s3vae.datasets.sprites import build_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
n = build_shard(snakemake.input.layers, snakemake.output[0], snakemake.wildcards.split,
                int(snakemake.wildcards.shard), snakemake.params.n_shards, snakemake.params.n_characters,
                snakemake.params.frame_size)
print(f"wrote {snakemake.output[0]}: {n} clips")
