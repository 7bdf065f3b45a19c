# Thin entry point for rule make_motion_transfer_figure (logic: s3vae.reporting.figures.motion_transfer_figure).
import numpy as np

from s3vae.comparisons import monkeynet
from s3vae.data import ClipDataset, batch_of
from s3vae.evaluation.metrics import latent_swap, swap_test_partners
from s3vae.reporting.figures import motion_transfer_figure
from s3vae.train import load_model
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
ds, seed, n = snakemake.params.dataset, snakemake.params.seed, snakemake.params.n
data = ClipDataset(snakemake.input.test)
static = [k for k in ds["labels"] if k not in ds["dynamic_labels"]]
# pairs as the swap score draws them: B has another action (Sprites) and other static labels than A
partner = swap_test_partners(data, static, list(ds["dynamic_labels"]), seed)
a = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(partner >= 0), n, replace=False))
swaps = {"S3VAE": latent_swap(load_model(snakemake.input.full))[0],
         "DSVAE": latent_swap(load_model(snakemake.input.dsvae))[0],
         "MonkeyNet": monkeynet.transfer_pair(monkeynet.load(snakemake.input.monkeynet))[0]}
print("wrote", motion_transfer_figure(batch_of(data, a)["frames"], batch_of(data, partner[a])["frames"], swaps,
                                      snakemake.output[0]))
