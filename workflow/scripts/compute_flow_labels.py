# Thin entry point for rule compute_flow_labels (logic: pseudolabels.flow).
from pseudolabels.flow import compute_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
n = compute_shard(snakemake.input[0], snakemake.output[0], snakemake.params.grid, snakemake.params.topk,
                  snakemake.params.method)
print(f"wrote {snakemake.output[0]}: flow labels of {n} clips")
