# Thin entry point for rule compute_silence_labels (logic: pseudolabels.silence).
from pseudolabels.silence import compute_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
s = snakemake.params.silence
n = compute_shard(snakemake.input[0], snakemake.output[0], threshold_db=s["threshold_db"],
                  ref=s.get("ref", "utterance"))
print(f"wrote {snakemake.output[0]}: silence labels of {n} segments")
