# Shared helpers: config validation, wildcard constraints, shard lists.
import os

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.json")


wildcard_constraints:
    dataset="[a-z0-9]+",
    split="train|test",
    shard=r"\d+",
    variant="[a-z][a-z0-9-]*",
    seed=r"\d+",


LOGS = "results/{dataset}/logs"
BENCH = "results/{dataset}/benchmarks"


def dataset_cfg(dataset):
    return config["datasets"][dataset]


def clip_shards(dataset, split):
    n = dataset_cfg(dataset)["n_shards"]
    return [f"results/{dataset}/shards/{split}_{i}.h5" for i in range(n)]


def flow_shards(dataset, split):
    n = dataset_cfg(dataset)["n_shards"]
    return [f"results/{dataset}/pseudolabels/flow/{split}_{i}.h5" for i in range(n)]


def variant_cfg(variant):
    if variant not in config["variants"]:
        raise ValueError(f"unknown variant {variant!r}; config variants: {sorted(config['variants'])}")
    return config["variants"][variant]


def train_config(variant, seed):
    """TrainConfig fields for one (variant, seed): train defaults, then the variant's λ's."""
    cfg = dict(config["train"])
    cfg.update(variant_cfg(variant))
    cfg["seed"] = int(seed)
    return cfg


def data_mirror():
    return config.get("data_mirror") or os.environ.get("S3VAE_DATA_MIRROR") or ""
