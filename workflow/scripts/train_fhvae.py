# Thin entry point for rule train_fhvae (logic: s3vae.comparisons.fhvae).
# First, before torch is imported: an allocation failure anywhere in the job ends with a line naming it.
from s3vae.memory import name_out_of_memory

name_out_of_memory(f"{snakemake.rule} ({', '.join(f'{k}={v}' for k, v in snakemake.wildcards.items())})")

from s3vae.comparisons.fhvae import FHVAEConfig, FHVAETrainConfig, train
from s3vae.utils import from_dict, redirect_output

redirect_output(snakemake.log[0])
model_cfg, train_cfg = snakemake.params.configs
train(list(snakemake.input.clips), snakemake.output.model, snakemake.params.ckpt_dir,
      from_dict(FHVAEConfig, model_cfg), from_dict(FHVAETrainConfig, {**train_cfg, "threads": snakemake.threads}))
