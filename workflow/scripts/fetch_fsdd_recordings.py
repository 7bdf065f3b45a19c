# Thin entry point for rule fetch_fsdd_recordings (logic: s3vae.datasets.fsdd).
from s3vae.datasets.fsdd import fetch_recordings
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
fetch_recordings(snakemake.output[0], snakemake.params.mirror or None)
