# Thin entry point for rule build_mug_shards (logic: s3vae.datasets.mug).
from s3vae.datasets.mug import build_shard
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
cfg = snakemake.params.cfg
options = {k: cfg[k] for k in ("frame_step", "clips_per_take", "window_hop", "seed", "train_fraction", "margin",
                               "exclude", "face_detector", "detect_frames", "min_face_fraction") if k in cfg}
n = build_shard(snakemake.input.root, snakemake.output.shard, snakemake.wildcards.split,
                int(snakemake.wildcards.shard), cfg["n_shards"], frame_size=cfg["frame_size"], frames=cfg["frames"],
                skip_bad=cfg.get("skip_bad", False), **options)
print(f"wrote {snakemake.output.shard}: {n} clips")
