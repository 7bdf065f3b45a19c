# Thin entry point for rule evaluate_model (logic: s3vae.evaluation.metrics; MoCoGAN, MonkeyNet: their modules).
# First, before torch is imported: an allocation failure anywhere in the job ends with a line naming it.
from s3vae.memory import name_out_of_memory

name_out_of_memory(f"{snakemake.rule} ({', '.join(f'{k}={v}' for k, v in snakemake.wildcards.items())})")

import json

import torch

from s3vae.comparisons import mocogan, monkeynet
from s3vae.evaluation.judge import load_judge
from s3vae.evaluation.metrics import evaluate_model
from s3vae.train import load_model
from s3vae.utils import pick_device, redirect_output

redirect_output(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
ds, ev = snakemake.params.dataset, snakemake.params.evaluate
device = pick_device(ev["device"])
static = [k for k in ds["labels"] if k not in ds["dynamic_labels"]]
judge = load_judge(snakemake.input.judge, device)
if snakemake.wildcards.variant == "mocogan":  # no encoder: generates from each test clip's labels
    res = mocogan.evaluate(mocogan.load(snakemake.input.model, device), judge, snakemake.input.test, static,
                           list(ds["dynamic_labels"]), batch_size=ev["batch_size"], seed=ev["seed"], device=device)
elif snakemake.wildcards.variant == "monkeynet":  # swap scores only: A's first frame moved as B moves
    res = monkeynet.evaluate(monkeynet.load(snakemake.input.model, device), judge, snakemake.input.test, static,
                             list(ds["dynamic_labels"]), batch_size=ev["batch_size"], seed=ev["seed"], device=device)
else:
    res = evaluate_model(load_model(snakemake.input.model, device), judge, snakemake.input.test, static,
                         list(ds["dynamic_labels"]), batch_size=ev["batch_size"], seed=ev["seed"], device=device)
print(json.dumps(res, indent=2))
with open(snakemake.output[0], "w") as fh:
    json.dump(res, fh, indent=2)
