"""Per-(dataset, variant) training and model settings from the workflow's config dict.

The one place that merges ``config/config.yaml``'s sections into ``TrainConfig`` and ``S3VAEConfig``
fields; the workflow (``workflow/rules/common.smk``) and the benchmarks call it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping


def dfp_spec(config: dict, dataset: str, variant: str) -> dict:
    """What L_DFP reads for this (dataset, variant): pseudo-labels, or ground truth for baseline-sv."""
    ds = config["datasets"][dataset]
    if config["variants"][variant].get("dfp_labels", "pseudo") == "ground_truth":
        if "dfp_ground_truth" not in ds:
            raise ValueError(f"variant {variant!r} needs datasets.{dataset}.dfp_ground_truth (ground-truth DFP labels)")
        return ds["dfp_ground_truth"]
    return ds["dfp"]


# TrainConfig fields a variant may set over the train defaults (beside the λ's)
VARIANT_OPTIONS = ("scc_on", "mi_estimator")


def train_config(config: dict, dataset: str, variant: str, seed: int) -> dict:
    """TrainConfig fields: train defaults, the dataset's overrides, the variant's λ's and options, its DFP labels.

    The variants hold App. D's λ's (0 switches a term off); ``datasets.<name>.lambda_scale`` multiplies
    them for one dataset (FSDD/TIMIT: config.yaml says why), so every variant keeps its meaning there."""
    cfg = {**config["train"], **config.get("train_overrides", {}).get(dataset, {})}
    v = config["variants"][variant]
    scale = config["datasets"][dataset].get("lambda_scale", {})
    # unscaled terms keep the variant's value as written (a changed param would retrain the model)
    for term in ("scc", "dfp", "mi", "adv"):
        lam = v.get(f"lambda_{term}", 0)
        cfg[f"lambda_{term}"] = lam * scale[term] if term in scale and lam else lam
    for option in VARIANT_OPTIONS:
        if option in v:
            cfg[option] = v[option]
    dfp = dfp_spec(config, dataset, variant)
    cfg.update(dfp_key=dfp["key"], dfp_kind=dfp["kind"], dfp_offset=dfp["offset"], seed=int(seed))
    return cfg


def model_config(config: dict, dataset: str, variant: str) -> dict:
    """S3VAEConfig fields: the dataset's model, the variant's posterior, phi_a's (and phi_f's) output size."""
    ds = config["datasets"][dataset]
    cfg = dict(ds["model"])
    v = config["variants"][variant]
    cfg["posterior"] = v.get("posterior", "s3vae")
    if cfg["posterior"] != "s3vae":
        cfg.pop("static_lstm", None)  # DSVAE has its own BiLSTM: S3VAE's LSTM_f option does not apply
    cfg["dfp_out"] = dfp_spec(config, dataset, variant)["out"]
    if v.get("lambda_adv", 0) * ds.get("lambda_scale", {}).get("adv", 1) > 0:
        cfg["adv_steps"] = ds["frames"]  # phi_f predicts every frame's label from z_f
    train = train_config(config, dataset, variant, seed=0)
    if train["lambda_mi"] > 0 and train.get("mi_estimator", "mws") == "club":
        cfg["mi_critic"] = "club"  # CLUB's q(z_t | z_f) lives in the model (trained and checkpointed with it)
    return cfg


def mocogan_configs(config: dict, dataset: str, seed: int) -> tuple[dict, dict]:
    """MoCoGANConfig and MoCoGANTrainConfig fields for a video dataset: its frames and every labelled
    factor (the categorical code), DCGAN widths doubling from ``gen_width``/``disc_width`` up to the
    frame size, and ``mocogan.train``."""
    ds, m = config["datasets"][dataset], config["mocogan"]
    n = (ds["model"]["image_size"] // 4).bit_length() - 1       # stride-2 layers between 4x4 and the frame
    model = {"channels": ds["model"]["channels"], "image_size": ds["model"]["image_size"], "frames": ds["frames"],
             "labels": dict(ds["labels"]), **m["model"],
             "gen_widths": [m["gen_width"] * 2 ** (n - 1 - i) for i in range(n)],
             "disc_widths": [m["disc_width"] * 2 ** i for i in range(n)]}
    train = {**m["train"], "seed": int(seed), **{k: config["train"][k] for k in ("threads", "device")}}
    return model, train


def monkeynet_configs(config: dict, dataset: str, seed: int) -> tuple[dict, dict]:
    """MonkeyNetConfig and MonkeyNetTrainConfig fields for a video dataset: its channels and frame size,
    ``monkeynet.model`` and ``monkeynet.train``."""
    ds, m = config["datasets"][dataset], config["monkeynet"]
    model = {"channels": ds["model"]["channels"], "image_size": ds["model"]["image_size"], **m["model"]}
    train = {**m["train"], "seed": int(seed), **{k: config["train"][k] for k in ("threads", "device")}}
    return model, train


def fhvae_configs(config: dict, dataset: str, seed: int) -> tuple[dict, dict]:
    """FHVAEConfig and FHVAETrainConfig fields for an audio dataset (``fhvae`` in the config)."""
    ds, f = config["datasets"][dataset], config["fhvae"]
    model = {"audio_features": ds["model"]["audio_features"], **f["model"]}
    train = {**f["train"], "seed": int(seed), **{k: config["train"][k] for k in ("threads", "device")}}
    return model, train


def coerce_overrides(config: dict, overrides: dict, schema: dict) -> list[str]:
    """Give ``--config`` overrides the types a config file would give them; returns the keys changed.

    Snakemake reads a nested ``--config`` value (``datasets={"mug": {"skip_bad": true, "n_shards": 4}}``)
    with YAML's base loader, which leaves every scalar inside it a string. Each string that came from
    ``overrides`` and that the schema rejects where it stands in ``config`` is read again as YAML
    (``"true"`` -> True, ``"4"`` -> 4, ``"0.5"`` -> 0.5), in place. A string the schema accepts stays one
    (a root folder named ``2024``), and a value given in a config file is never touched: there a quoted
    ``"true"`` is the user's choice and the schema rejects it.
    """
    import yaml
    from jsonschema.validators import validator_for

    def string_leaves(node, path=()):
        if isinstance(node, Mapping):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return {path} if isinstance(node, str) else set()
        return set().union(*(string_leaves(v, (*path, k)) for k, v in items))

    candidates = string_leaves(overrides)
    validator = validator_for(schema)(schema)
    changed: list[str] = []
    for error in list(validator.iter_errors(config)):  # listed first: the loop edits config
        path = tuple(error.absolute_path)
        if path not in candidates:
            continue
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        if not isinstance(value, str):
            continue  # already coerced (one value can fail several keywords)
        try:
            typed = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        if isinstance(typed, (bool, int, float)) or typed is None:
            parent[path[-1]] = typed
            changed.append(".".join(str(k) for k in path))
    return changed


class ConfigError(ValueError):
    """The merged config is unusable: the message names each key path and what is wrong with it."""


# Rows that are not S3VAE variants but systems with rules of their own, per place a row can be named.
TABLE_SYSTEMS = {"table1": ("mocogan",), "table2": ("mocogan",), "table3": ("fhvae",)}
SWAP_SYSTEMS = ("monkeynet",)


def key_path(path) -> str:
    """``("table1", "rows", 0)`` -> ``table1.rows[0]``; the empty path is the top level."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out or "(top level)"


def _unknown(where: str, name, what: str, valid, note: str = "") -> str:
    valid = sorted(set(valid))
    close = difflib.get_close_matches(str(name), valid, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: {name!r} is no {what}{hint}; valid names: {', '.join(valid) or '(none)'}{note}"


def name_errors(config: dict) -> list[str]:
    """Every name the config refers to that it does not define: table rows, swap.extra_rows, targets,
    table2.datasets, not_implemented, and the dataset keys of priority, train_overrides, judge_overrides,
    seed_overrides.

    Reads only values of the expected shape (the schema reports the others)."""
    def section(key):
        v = config.get(key)
        return v if isinstance(v, Mapping) else {}

    def names(v):
        return list(v) if isinstance(v, list) else []

    datasets = section("datasets")
    video = [d for d, c in datasets.items() if isinstance(c, Mapping) and c.get("modality") == "video"]
    variants = list(section("variants"))
    not_impl = [n for n in names(config.get("not_implemented")) if isinstance(n, str)]
    errors = []
    known = [*variants, *(s for v in TABLE_SYSTEMS.values() for s in v), *SWAP_SYSTEMS]
    rows = []  # the tables' rows, for not_implemented
    for table, systems in TABLE_SYSTEMS.items():
        for i, row in enumerate(names(section(table).get("rows"))):
            if row not in (*variants, *systems, *not_impl):
                errors.append(_unknown(f"{table}.rows[{i}]", row, "variant or comparison system of this table",
                                       (*variants, *systems), " (a row without a model: list it in "
                                       "not_implemented too)"))
            else:
                rows.append(row)
    for i, row in enumerate(names(section("swap").get("extra_rows"))):
        if row not in SWAP_SYSTEMS:
            errors.append(_unknown(f"swap.extra_rows[{i}]", row, "swap-only system", SWAP_SYSTEMS))
    known += [r for r in rows if isinstance(r, str)]
    for i, row in enumerate(names(config.get("not_implemented"))):
        if row not in known:
            errors.append(_unknown(f"not_implemented[{i}]", row, "model or table row", known))
    for i, ds in enumerate(names(config.get("targets"))):
        if ds not in datasets:
            errors.append(_unknown(f"targets[{i}]", ds, "dataset", datasets))
    for i, ds in enumerate(names(section("table2").get("datasets"))):
        if ds not in datasets:
            errors.append(_unknown(f"table2.datasets[{i}]", ds, "dataset", datasets))
    for key, valid, what in (("priority", datasets, "dataset"), ("train_overrides", datasets, "dataset"),
                             ("seed_overrides", datasets, "dataset"),
                             ("judge_overrides", video, "video dataset")):
        for ds in section(key):
            if ds not in valid:
                errors.append(_unknown(f"{key}.{ds}", ds, what, valid))
    return errors


def seeds(config: dict, dataset: str) -> list[int]:
    """The training seeds of a dataset's models: seed_overrides.<dataset>, else seeds."""
    return list((config.get("seed_overrides") or {}).get(dataset) or config["seeds"])


def schema_errors(config: dict, schema: dict) -> list[str]:
    """Every schema violation as one line, the key path first: ``train.epochs: '3' is not of type
    'integer'``, with the valid keys of an object that has an unknown one, and a hint for quoted numbers."""
    import yaml
    from jsonschema.validators import validator_for

    lines = []
    validator = validator_for(schema)(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(k) for k in e.absolute_path]):
        line = f"{key_path(error.absolute_path)}: {error.message}"
        if error.validator == "additionalProperties" and isinstance(error.schema.get("properties"), Mapping):
            line += f"; valid keys: {', '.join(sorted(error.schema['properties']))}"
        elif error.validator == "type" and isinstance(error.instance, str):
            try:
                typed = yaml.safe_load(error.instance)
            except yaml.YAMLError:
                typed = None
            if isinstance(typed, (bool, int, float)):
                line += (f" (a quoted value stays a string in a config file: write {error.instance} without "
                         f"quotes)")
        if line not in lines:
            lines.append(line)
    return lines


def check_config(config: dict, schema: dict, cli_overrides: Mapping | None = None) -> None:
    """Type the ``--config key=value`` strings (``coerce_overrides``; nothing from config files), then
    check names and schema. Raises ConfigError listing every problem, each led by its key path."""
    coerce_overrides(config, cli_overrides or {}, schema)
    problems = name_errors(config) or schema_errors(config, schema)
    if len(problems) == 1:
        raise ConfigError(f"config: {problems[0]}")
    if problems:
        raise ConfigError(f"config: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))
