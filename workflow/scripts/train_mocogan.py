# Thin entry point for rule train_mocogan (logic: s3vae.comparisons.mocogan).
from s3vae.comparisons.mocogan import MoCoGANConfig, MoCoGANTrainConfig, train
from s3vae.utils import from_dict, redirect_output

redirect_output(snakemake.log[0])
model_cfg, train_cfg = snakemake.params.configs
train(list(snakemake.input.clips), snakemake.output.model, snakemake.params.ckpt_dir,
      from_dict(MoCoGANConfig, model_cfg), from_dict(MoCoGANTrainConfig, {**train_cfg, "threads": snakemake.threads}))
