# Thin entry point for rule plot_training (logic: s3vae.reporting.curves).
from s3vae.reporting.curves import plot_training
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
w = snakemake.wildcards
print("wrote", plot_training(snakemake.input.steps, snakemake.output.png, f"{w.dataset} {w.variant} seed {w.seed}"))
