# Thin entry point for rule fetch_mnist (logic: s3vae.datasets.smmnist).
from s3vae.datasets.smmnist import fetch_mnist
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
fetch_mnist(snakemake.output[0], snakemake.params.mirror or None)
