# Thin entry point for rule evaluate_verification (logic: s3vae.evaluation.verification).
# First, before torch is imported: an allocation failure anywhere in the job ends with a line naming it.
from s3vae.memory import name_out_of_memory

name_out_of_memory(f"{snakemake.rule} ({', '.join(f'{k}={v}' for k, v in snakemake.wildcards.items())})")

import json

import torch

from s3vae.comparisons import fhvae
from s3vae.evaluation.verification import dynamic_content, speaker_verification
from s3vae.train import load_model
from s3vae.utils import load_weights_only, pick_device, redirect_output

redirect_output(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.params.evaluate["device"])
load = fhvae.load if snakemake.wildcards.variant == "fhvae" else load_model  # FHVAE: z2 / z1 as z_f / z_1:T
model = load(snakemake.input.model, device)
res = speaker_verification(model, snakemake.input.test, device, batch_size=snakemake.params.evaluate["batch_size"])
if snakemake.wildcards.variant != "fhvae":
    # what z_1:T still carries beside a high dynamic EER: reconstruction, silence labels, KL_t
    res["content"] = dynamic_content(model, snakemake.input.test, snakemake.input.test_labels, device)
    res["content"]["kl_t"] = load_weights_only(snakemake.input.model)["history"][-1]["kl_t"]
print(json.dumps(res, indent=2))
with open(snakemake.output[0], "w") as fh:
    json.dump(res, fh, indent=2)
