# Thin entry point for rule make_generation_figure (logic: s3vae.reporting.figures.generation_figure).
import numpy as np
import torch

from s3vae.comparisons import mocogan
from s3vae.data import ClipDataset
from s3vae.reporting.figures import generation_figure
from s3vae.train import load_model
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
gan = mocogan.load(snakemake.input.mocogan)
data = ClipDataset(snakemake.input.test)
# MoCoGAN's conditioning labels: those of test clips drawn at random (the data's joint distribution)
rows = np.random.default_rng(snakemake.params.seed).choice(len(data), snakemake.params.n, replace=False)
labels = {k: torch.as_tensor(data.arrays(f"labels/{k}")[rows]) for k in gan.cfg.labels}
print("wrote", generation_figure(load_model(snakemake.input.full), gan, labels, gan.cfg.frames, snakemake.output[0],
                                 n=snakemake.params.n, seed=snakemake.params.seed))
