# Thin entry point for rule fetch_sprites_layers (logic: s3vae.datasets.sprites).
from s3vae.datasets.sprites import fetch_layers
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
fetch_layers(snakemake.output[0], snakemake.params.mirror or None)
