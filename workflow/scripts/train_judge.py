# Thin entry point for rule train_judge (logic: s3vae.evaluation.judge).
# First, before torch is imported: an allocation failure anywhere in the job ends with a line naming it.
from s3vae.memory import name_out_of_memory

name_out_of_memory(f"{snakemake.rule} ({', '.join(f'{k}={v}' for k, v in snakemake.wildcards.items())})")

from s3vae.evaluation.judge import JudgeConfig, train_judge
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
ds, jc = snakemake.params.dataset, dict(snakemake.params.judge)
arch = {k: jc.pop(k) for k in ("width", "spatial_pool", "frame_net") if k in jc}   # absent: JudgeConfig's default
cfg = JudgeConfig(channels=ds["model"]["channels"], image_size=ds["model"]["image_size"], frames=ds["frames"],
                  heads=ds["labels"], dynamic=ds["dynamic_labels"], **arch)
train_judge(snakemake.input.train, snakemake.input.test, snakemake.output.judge, snakemake.output.metrics, cfg,
            threads=snakemake.threads, ckpt_dir=snakemake.params.ckpt_dir, **jc)
