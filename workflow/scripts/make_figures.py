# Thin entry point for rule make_figures (logic: s3vae.reporting.figures).
from pathlib import Path

from s3vae.data import ClipDataset, batch_of
from s3vae.reporting.figures import write_figures
from s3vae.train import load_model
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
data = ClipDataset(snakemake.input.test)
n = snakemake.params.n
# spread the picks over the test set (consecutive clips are one character's 9 actions)
step = max(1, len(data) // (2 * n))
clips = batch_of(data, [(i * step + i) % len(data) for i in range(2 * n)])["frames"]
for path in write_figures(load_model(snakemake.input.model), clips, Path(snakemake.output.swap).parent, n=n,
                          seed=snakemake.params.seed):
    print("wrote", path)
