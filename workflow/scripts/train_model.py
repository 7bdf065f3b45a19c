# Thin entry point for rule train_model (logic: s3vae.train).
# First, before torch is imported: an allocation failure anywhere in the job ends with a line naming it.
from s3vae.memory import name_out_of_memory

name_out_of_memory(f"{snakemake.rule} ({', '.join(f'{k}={v}' for k, v in snakemake.wildcards.items())})")

import shutil

from s3vae.model import S3VAEConfig
from s3vae.train import TrainConfig, train
from s3vae.utils import from_dict, redirect_output

redirect_output(snakemake.log[0])
tcfg = from_dict(TrainConfig, {**snakemake.params.train_config, "threads": snakemake.threads})
labels = {tcfg.dfp_key: list(snakemake.input.labels)} if snakemake.input.labels else {}
# Snakemake reruns this rule when its params or inputs changed, so a checkpoint of other settings or data is
# stale: start over instead of refusing.
train(list(snakemake.input.clips), labels, snakemake.output.model, snakemake.params.ckpt_dir,
      from_dict(S3VAEConfig, snakemake.params.model_config), tcfg, on_stale="restart")
shutil.copyfile(f"{snakemake.params.ckpt_dir}/losses.csv", snakemake.output.losses)
shutil.copyfile(f"{snakemake.params.ckpt_dir}/steps.csv", snakemake.output.steps)
