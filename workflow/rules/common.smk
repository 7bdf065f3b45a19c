# Shared helpers: config validation, wildcard constraints, shard lists, per-(dataset, variant) configs.
import os
import re

import torch
import yaml
from snakemake.exceptions import WorkflowError

from s3vae import configs
from s3vae.model import S3VAEConfig
from s3vae.utils import from_dict

# A nested --config value arrives with every scalar a string ("true", "4"): only those are typed as a config
# file would type them (config_settings.config holds --config alone, not the --configfile contents); then
# names and schema are checked, each problem on one line led by its key path (s3vae.configs.check_config).
with open(os.path.join(workflow.current_basedir, "../schemas/config.schema.yaml")) as _fh:
    try:
        configs.check_config(config, yaml.safe_load(_fh), workflow.config_settings.config)
    except configs.ConfigError as e:
        raise WorkflowError(str(e)) from None

VIDEO = [ds for ds, c in config["datasets"].items() if c["modality"] == "video"]
AUDIO = [ds for ds, c in config["datasets"].items() if c["modality"] == "audio"]

# Training, judging and evaluation take this machine's GPU when they will run on CUDA (the default profile
# caps `gpu` at 1: one such job at a time); on a CPU-only machine they are plain CPU jobs that --cores packs
# side by side. The SLURM profile sets gpu: 1 for them itself.
GPU_JOB = int(config["train"]["device"] != "cpu" and torch.cuda.is_available())

# Checks the schema cannot express: the model reads the frames the recipe writes.
for _ds in VIDEO:
    _size, _model = config["datasets"][_ds].get("frame_size"), config["datasets"][_ds]["model"]
    if _size is not None and _size != _model["image_size"]:
        raise WorkflowError(f"datasets.{_ds}.frame_size = {_size} but datasets.{_ds}.model.image_size = "
                            f"{_model['image_size']}: the model must read the frames the recipe writes")
    try:  # widths that cannot reach the frame size, unknown options: S3VAEConfig says which key
        from_dict(S3VAEConfig, _model)
    except (TypeError, ValueError) as e:
        raise WorkflowError(f"datasets.{_ds}.model: {e}") from e


wildcard_constraints:
    dataset="[a-z0-9]+",
    split="train|test",
    shard=r"\d+",
    variant="[a-z][a-z0-9+-]*",
    seed=r"\d+",


def one_of(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


# Job order on a few cores (Snakemake runs the ready job of highest priority first): the data stages first
# (short, and every later job waits for them), then judges and trainings by config `priority`, so that the
# longest trainings start early and the run does not end with one of them running alone. A dataset's judge
# goes before its trainings: every evaluation of the dataset waits for it.
PREP_PRIORITY = 100


def job_priority(wildcards):
    return config.get("priority", {}).get(wildcards.dataset, 0)


def judge_priority(wildcards):
    return job_priority(wildcards) + 1


def dataset_cfg(dataset):
    if dataset not in config["datasets"]:
        raise WorkflowError(f"unknown dataset {dataset!r}; config datasets: {sorted(config['datasets'])}")
    return config["datasets"][dataset]


# Keys of a dataset's config that only training and evaluation read: the data recipes get the rest as
# their params, so that changing the model (or the DFP target) does not rebuild the shards.
MODEL_ONLY_KEYS = ("model", "dfp", "dfp_ground_truth", "dynamic_labels", "lambda_scale")


def recipe_cfg(dataset):
    return {k: v for k, v in dataset_cfg(dataset).items() if k not in MODEL_ONLY_KEYS}


def required_root(dataset):
    """The user's copy of a licensed dataset (MUG, TIMIT): a clear error when it is not configured."""
    root = dataset_cfg(dataset).get("root", "")
    if not root:
        raise WorkflowError(
            f"datasets.{dataset}.root is not set: {dataset} is licensed and cannot be downloaded; point it at "
            f"your copy in a --configfile (datasets: {{{dataset}: {{root: path/to/{dataset}}}}}) or with --config "
            f"(docs/datasets.md)")
    if not os.path.isdir(root):
        raise WorkflowError(f"datasets.{dataset}.root = {root!r} is not a folder")
    return root


def clip_shards(dataset, split):
    n = dataset_cfg(dataset)["n_shards"]
    return [f"results/{dataset}/shards/{split}_{i}.h5" for i in range(n)]


def pseudolabel_shards(dataset, split):
    """The shards of the pseudo-label stage that feeds this dataset's L_DFP (flow/landmarks/silence)."""
    kind = dataset_cfg(dataset)["pseudolabel"]
    n = dataset_cfg(dataset)["n_shards"]
    return [f"results/{dataset}/pseudolabels/{kind}/{split}_{i}.h5" for i in range(n)]


def variant_cfg(variant):
    if variant not in config["variants"]:
        raise WorkflowError(f"unknown variant {variant!r}; config variants: {sorted(config['variants'])}")
    return config["variants"][variant]


def uses_pseudolabels(dataset, variant):
    """Whether L_DFP or the static adversary of this (dataset, variant) reads the pseudo-label stage."""
    t = train_config(dataset, variant, 0)
    return (t["lambda_dfp"] > 0 or t["lambda_adv"] > 0) and variant_cfg(variant).get("dfp_labels", "pseudo") == "pseudo"


def dfp_spec(dataset, variant):
    """What L_DFP reads for this (dataset, variant) (s3vae.configs.dfp_spec)."""
    dataset_cfg(dataset), variant_cfg(variant)  # clear errors for unknown names
    try:
        return configs.dfp_spec(config, dataset, variant)
    except ValueError as e:
        raise WorkflowError(str(e)) from e


def train_config(dataset, variant, seed):
    """TrainConfig fields for one model (s3vae.configs.train_config)."""
    dfp_spec(dataset, variant)
    return configs.train_config(config, dataset, variant, seed)


def model_config(dataset, variant):
    """S3VAEConfig fields for one model (s3vae.configs.model_config)."""
    dfp_spec(dataset, variant)
    return configs.model_config(config, dataset, variant)


def implemented(rows):
    return [r for r in rows if r not in config.get("not_implemented", [])]


def data_mirror():
    """The configured mirror only: $S3VAE_DATA_MIRROR is read by the jobs themselves, so that where a
    machine keeps its copy is not a parameter (moving it must not re-fetch data checked by checksum)."""
    return config.get("data_mirror") or ""


def swap_rows():
    """swap.csv's rows: Table 1's, then the systems scored by swapping only (swap.extra_rows: MonkeyNet)."""
    rows = config["table1"]["rows"]
    return rows + [r for r in config["swap"]["extra_rows"] if r not in rows]


def dataset_targets(dataset):
    """Everything `all` builds for one dataset: its tables and one set of figures per S3VAE model (and
    Fig. 5, the full model beside MoCoGAN, when MoCoGAN is a row; Fig. 4's motion-transfer panel of
    full, DSVAE and MonkeyNet when MonkeyNet is in swap.csv)."""
    seed = configs.seeds(config, dataset)[0]
    if dataset in AUDIO:
        rows = implemented(config["table3"]["rows"])
        out = [f"results/{dataset}/table3.csv"]
        if dataset in config["table2"]["datasets"]:
            out.append(f"results/{dataset}/table2.csv")
            rows = rows + [r for r in implemented(config["table2"]["rows"]) if r not in rows]
        return out + [
            f"results/{dataset}/figures/{v}_seed{seed}/{fig}.png"
            for v in rows if v in config["variants"] for fig in ("mel_swap", "training")
        ]
    rows = implemented(config["table1"]["rows"])
    out = [f"results/{dataset}/table1.csv", f"results/{dataset}/swap.csv"]
    if dataset in config["table2"]["datasets"]:
        out.append(f"results/{dataset}/table2.csv")
        rows = rows + [r for r in implemented(config["table2"]["rows"]) if r not in rows]
    if "mocogan" in rows:
        out.append(f"results/{dataset}/figures/generation_seed{seed}.png")
    if "monkeynet" in implemented(swap_rows()):
        out.append(f"results/{dataset}/figures/motion_transfer_seed{seed}.png")
    return out + [f"results/{dataset}/figures/{v}_seed{seed}/{fig}.png"
                  for v in rows if v in config["variants"] for fig in ("swap", "training")]


def stop_jobs_on_interrupt():
    """On SIGTERM or SIGINT, Snakemake's local executor stops starting jobs but waits for the running ones
    (hours of training): send them SIGTERM (training checkpoints and exits), then do what Snakemake does."""
    import signal

    import psutil

    def forwarding(previous):
        def handler(signum, frame):
            for job in psutil.Process().children():
                try:
                    job.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    pass
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        return handler

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forwarding(signal.getsignal(signum)))


def eval_files(dataset, rows):
    """The evaluation files a table of these rows reads: every implemented row x every seed."""
    return expand(
        "results/{dataset}/eval/{variant}/seed{seed}.json",
        dataset=dataset,
        variant=implemented(rows),
        seed=configs.seeds(config, dataset),
    )


def comparison_inputs(wildcards):
    """The tables compare_with_paper reads, keyed <dataset>_table<n>: every target dataset's."""
    tables = {}
    for ds in config["targets"]:
        main = 3 if ds in AUDIO else 1
        tables[f"{ds}_table{main}"] = f"results/{ds}/table{main}.csv"
        if ds in config["table2"]["datasets"]:
            tables[f"{ds}_table2"] = f"results/{ds}/table2.csv"
    return tables


# Runs in the main Snakemake process once its scheduler (and its SIGTERM handler) exists.
onstart:
    stop_jobs_on_interrupt()
