# Thin entry point for rule make_audio_figures (logic: s3vae.reporting.figures_audio).
from s3vae.reporting.figures_audio import swap_grid_from_shards
from s3vae.train import load_model
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
path = swap_grid_from_shards(load_model(snakemake.input.model), snakemake.input.test, snakemake.output[0],
                             seed=snakemake.params.seed, title=f"{snakemake.wildcards.dataset}: "
                             f"{snakemake.wildcards.variant}, seed {snakemake.wildcards.seed}")
print("wrote", path)
