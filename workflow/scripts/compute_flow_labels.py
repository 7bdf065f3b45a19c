# Thin entry point for rule compute_flow_labels (logic: pseudolabels.flow).
import torch

from pseudolabels.flow import compute_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
torch.set_num_threads(snakemake.threads)  # flownet2 on CPU: as many threads as the rule declares
f = snakemake.params.flow
n = compute_shard(snakemake.input[0], snakemake.output[0], grid=f["grid"], k=f["topk"], method=f["method"],
                  checkpoint=f.get("checkpoint") or None, arch=f.get("arch", "FlowNet2"),
                  device=f.get("device", "auto"), batch_size=f.get("batch_size", 64))
print(f"wrote {snakemake.output[0]}: flow labels of {n} clips")
