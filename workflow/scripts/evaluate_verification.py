# Thin entry point for rule evaluate_verification (logic: s3vae.evaluation.verification).
import json

import torch

from s3vae.comparisons import fhvae
from s3vae.train import load_model
from s3vae.utils import pick_device, redirect_output
from s3vae.evaluation.verification import speaker_verification

redirect_output(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.params.evaluate["device"])
load = fhvae.load if snakemake.wildcards.variant == "fhvae" else load_model  # FHVAE: z2 / z1 as z_f / z_1:T
res = speaker_verification(load(snakemake.input.model, device), snakemake.input.test, device,
                           batch_size=snakemake.params.evaluate["batch_size"])
print(json.dumps(res, indent=2))
with open(snakemake.output[0], "w") as fh:
    json.dump(res, fh, indent=2)
