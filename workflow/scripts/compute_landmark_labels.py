# Thin entry point for rule compute_landmark_labels (logic: pseudolabels.landmarks).
from pseudolabels.landmarks import compute_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
lm = snakemake.params.landmarks
options = {k: lm[k] for k in ("upscale", "skip_missing", "tracking", "fan_detector", "fan_device") if k in lm}
valid = compute_shard(snakemake.input[0], snakemake.output[0], backend=lm["backend"], **options)
print(f"wrote {snakemake.output[0]}: landmark gaps of {len(valid)} clips, {int((~valid).sum())} without a face")
