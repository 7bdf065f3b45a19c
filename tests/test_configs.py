"""s3vae.configs: how config.yaml's sections become a model's TrainConfig and S3VAEConfig."""

import pytest
import yaml

from s3vae import configs
from s3vae.model import S3VAEConfig
from s3vae.train import TrainConfig
from s3vae.utils import from_dict

SCHEMA = "workflow/schemas/config.schema.yaml"


def config():
    return yaml.safe_load(open("config/config.yaml"))


def test_every_default_model_config_builds():
    c = config()
    for ds in c["datasets"]:
        for v in c["variants"]:
            if c["variants"][v].get("dfp_labels") == "ground_truth" and "dfp_ground_truth" not in c["datasets"][ds]:
                with pytest.raises(ValueError, match="dfp_ground_truth"):
                    configs.train_config(c, ds, v, 1)
                continue
            from_dict(S3VAEConfig, configs.model_config(c, ds, v))
            from_dict(TrainConfig, configs.train_config(c, ds, v, 1))


def test_adversary_follows_the_variant_and_the_dataset_scale():
    c = config()
    assert configs.train_config(c, "sprites", "full+adv", 1)["lambda_adv"] > 0
    assert configs.model_config(c, "sprites", "full+adv")["adv_steps"] == c["datasets"]["sprites"]["frames"]
    for v in ("full", "full-mws", "baseline", "dsvae", "baseline-sv", "no-mi"):   # eq. 9's rows: no adversary
        assert configs.train_config(c, "sprites", v, 1)["lambda_adv"] == 0
        assert "adv_steps" not in configs.model_config(c, "sprites", v)
    # audio and MUG scale it to 0: their pseudo-labels are binary or regressed
    for ds in ("fsdd", "mug"):
        assert configs.train_config(c, ds, "full+adv", 1)["lambda_adv"] == 0
        assert "adv_steps" not in configs.model_config(c, ds, "full+adv")


@pytest.mark.parametrize("dataset,grad", [("sprites", "zf"), ("smmnist", "zf"), ("mug", "zf"),
                                          ("fsdd", "zt"), ("timit", "zt")])
def test_full_estimates_l_mi_by_club_in_the_direction_of_its_modality(dataset, grad):
    """full: CLUB's bound in every dataset, its gradient into z_f on video (z_f gives up the motion that
    predicts z_t) and into z_1:T on audio (z_1:T gives up the speaker z_f predicts); q(z_t | z_f) in the
    model and on its own optimiser. full-mws: eq. 7-8 as written, no critic."""
    c = config()
    t = configs.train_config(c, dataset, "full", 1)
    assert (t["mi_estimator"], t["mi_grad"]) == ("club", grad) and t["critic_steps"] > 0
    assert t["lambda_mi"] == c["variants"]["full"]["lambda_mi"] * c["datasets"][dataset]["lambda_scale"]["mi"] > 1
    assert configs.model_config(c, dataset, "full")["mi_critic"] == "club"
    assert configs.train_config(c, dataset, "full-mws", 1)["mi_estimator"] == "mws"
    assert "mi_critic" not in configs.model_config(c, dataset, "full-mws")
    assert "mi_critic" not in configs.model_config(c, dataset, "no-mi")


def test_lambda_scale_keeps_zero_terms_and_scales_the_others():
    c = config()
    t = configs.train_config(c, "fsdd", "full", 3)
    v = c["variants"]["full"]
    assert t["lambda_scc"] == v["lambda_scc"] * c["datasets"]["fsdd"]["lambda_scale"]["scc"]
    assert t["lambda_dfp"] == v["lambda_dfp"] and t["seed"] == 3
    assert configs.train_config(c, "fsdd", "baseline", 1)["lambda_scc"] == 0


def repeated_keys(override, base, path=""):
    """Dotted keys of ``override`` whose value equals ``base``'s (nested dicts compared key by key)."""
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            yield from repeated_keys(v, base[k], f"{path}{k}.")
        elif k in base and base[k] == v:
            yield f"{path}{k}"


@pytest.mark.parametrize("path", ["config/paper.yaml", "config/all_rows.yaml", "tests/tiny_config.yaml"])
def test_override_files_hold_only_what_differs_from_config_yaml(path):
    """Snakemake merges a --configfile over config/config.yaml key by key: a value repeated there would
    be a second place to change."""
    from snakemake.common.configfile import load_configfile

    assert list(repeated_keys(load_configfile(path), load_configfile("config/config.yaml"))) == []


def test_an_override_of_one_block_does_not_reach_the_blocks_that_share_its_anchor():
    """FSDD's and TIMIT's models (and the variants' λ's) are written once in config.yaml with YAML merge
    keys, which copy: Snakemake's in-place merge of an override into one block leaves the others alone."""
    from snakemake.common.configfile import load_configfile
    from snakemake.utils import update_config

    c = load_configfile("config/config.yaml")
    assert c["datasets"]["timit"]["model"] == c["datasets"]["fsdd"]["model"]
    update_config(c, {"datasets": {"fsdd": {"model": {"z_f": 3}}}, "variants": {"full": {"lambda_mi": 2}}})
    assert c["datasets"]["timit"]["model"]["z_f"] == 64
    assert c["variants"]["no-scc"]["lambda_mi"] == c["variants"]["full-mws"]["lambda_mi"] == 1


def test_config_overrides_get_the_types_a_config_file_gives():
    """`--config 'datasets={"mug": {...}}'` arrives with every nested scalar a string (Snakemake reads it
    with YAML's base loader): booleans and numbers are typed where the schema wants them, nothing else."""
    from jsonschema.validators import validator_for
    from snakemake.utils import update_config

    schema = yaml.safe_load(open(SCHEMA))
    c = config()
    c["datasets"]["mug"]["exclude"] = ["*nsg*"]
    overrides = {"datasets": {"mug": {"root": "2024", "skip_bad": "true", "n_shards": "4",
                                      "min_face_fraction": "0.25", "exclude": ["1e3"]},
                              "sprites": {"frame_size": "16", "model": {"enc_widths": ["8", "16"]}}},
                 "train": {"lr": "0.002"}}
    update_config(c, overrides)
    c["datasets"]["fsdd"]["n_shards"] = "3"  # a quoted number in a config file: not an override
    changed = configs.coerce_overrides(c, overrides, schema)
    mug = c["datasets"]["mug"]
    assert mug["skip_bad"] is True and mug["n_shards"] == 4 and mug["min_face_fraction"] == 0.25
    assert mug["root"] == "2024" and mug["exclude"] == ["1e3"]  # strings where the schema wants strings
    assert c["datasets"]["sprites"]["frame_size"] == 16  # an enum of numbers
    assert c["datasets"]["sprites"]["model"]["enc_widths"] == [8, 16] and c["train"]["lr"] == 0.002
    assert c["datasets"]["fsdd"]["n_shards"] == "3"
    assert sorted(changed) == ["datasets.mug.min_face_fraction", "datasets.mug.n_shards", "datasets.mug.skip_bad",
                               "datasets.sprites.frame_size", "datasets.sprites.model.enc_widths.0",
                               "datasets.sprites.model.enc_widths.1", "train.lr"]
    errors = [e.message for e in validator_for(schema)(schema).iter_errors(c)]
    assert errors == ["'3' is not of type 'integer'"]
    # "false" must become False, not stay a (truthy) string; a value that is no boolean stays and is rejected
    c["datasets"]["mug"]["skip_bad"] = "false"
    configs.coerce_overrides(c, {"datasets": {"mug": {"skip_bad": "false"}}}, schema)
    assert c["datasets"]["mug"]["skip_bad"] is False
    c["datasets"]["mug"]["skip_bad"] = "maybe"
    assert configs.coerce_overrides(c, {"datasets": {"mug": {"skip_bad": "maybe"}}}, schema) == []


def test_every_key_of_the_schema_is_described():
    def undescribed(node, path=""):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    yield f"{path}/{name}"
            for k, v in node.items():
                yield from undescribed(v, f"{path}/{k}")
        elif isinstance(node, list):
            for v in node:
                yield from undescribed(v, path)

    assert list(undescribed(yaml.safe_load(open(SCHEMA)))) == []


def test_the_schema_keys_and_enums_are_the_dataclasses_fields_and_constants():
    """One place per fact: the schema's train and model keys are TrainConfig's and S3VAEConfig's fields
    (less those the workflow sets: the variants' λ's, the DFP spec, the seed, phi_f's steps), and each
    enum equals the constant or Literal type the dataclass checks it against."""
    import dataclasses
    import typing

    from s3vae import model as model_module
    from s3vae.losses import LossOptions

    schema = yaml.safe_load(open(SCHEMA))
    train, model = schema["properties"]["train"]["properties"], schema["$defs"]["model"]["properties"]
    variant = schema["properties"]["variants"]["additionalProperties"]["properties"]
    set_by_workflow = {"dfp_key", "dfp_kind", "dfp_offset", "seed"}
    lambdas = {f"lambda_{t}" for t in ("scc", "dfp", "mi", "adv")}
    assert set(train) | lambdas | set_by_workflow == {f.name for f in dataclasses.fields(TrainConfig)}
    assert lambdas <= set(variant)
    assert set(model) | {"adv_steps"} == {f.name for f in dataclasses.fields(S3VAEConfig)}

    def literals(cls):
        return {k: set(typing.get_args(v)) for k, v in typing.get_type_hints(cls).items()
                if typing.get_origin(v) is typing.Literal}

    train_literals = literals(TrainConfig)
    assert {k for k, v in train.items() if "enum" in v} == set(train_literals) - {"dfp_kind"}
    for key, allowed in train_literals.items():
        assert set(train.get(key, {"enum": allowed})["enum"]) == allowed, key
        assert allowed == literals(LossOptions).get(key, allowed), key  # the loss checks the same values
    constants = {"posterior": "POSTERIORS", "static_lstm": "STATIC_LSTMS", "zt_input": "ZT_INPUTS",
                 "mi_critic": "MI_CRITICS", "decoder": "DECODERS"}
    for key, name in constants.items():
        assert set(model[key]["enum"]) == set(getattr(model_module, name)), key
    assert set(variant["posterior"]["enum"]) == set(model_module.POSTERIORS)


def test_the_schema_blocks_of_the_judge_and_the_comparison_systems_are_their_dataclasses():
    """One place per fact, for every other config block: each key of judge, mocogan, monkeynet and fhvae is a
    field of the dataclass (or an argument of the function) that reads it, each enum that field's Literal."""
    import dataclasses
    import inspect
    import typing

    from s3vae.comparisons import fhvae, mocogan, monkeynet
    from s3vae.evaluation import judge

    schema = yaml.safe_load(open(SCHEMA))["properties"]

    def keys(block, *path):
        node = schema[block]
        for p in path:
            node = node["properties"][p]
        return node["properties"]

    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    def literal_enums(cls, block):
        for k, v in typing.get_type_hints(cls).items():
            if typing.get_origin(v) is typing.Literal and k in block:
                assert set(block[k]["enum"]) == set(typing.get_args(v)), (cls.__name__, k)

    train_args = set(inspect.signature(judge.train_judge).parameters) - {"train_shards", "test_shards", "out",
                                                                          "metrics_out", "cfg", "log", "ckpt_dir"}
    block = keys("judge")
    set_by_workflow = {"channels", "image_size", "frames", "heads", "dynamic", "feat_dim"}
    assert set(block) == fields(judge.JudgeConfig) - set_by_workflow | train_args - {"threads"}
    literal_enums(judge.JudgeConfig, block)
    with pytest.raises(ValueError, match="spatial_pool"):
        judge.JudgeConfig(spatial_pool="mean")
    workflow_set = {"seed", "threads", "device"}
    for module, name, model_cls, train_cls, model_set in (
            (mocogan, "mocogan", mocogan.MoCoGANConfig, mocogan.MoCoGANTrainConfig,
             {"channels", "image_size", "frames", "labels", "gen_widths", "disc_widths"}),
            (monkeynet, "monkeynet", monkeynet.MonkeyNetConfig, monkeynet.MonkeyNetTrainConfig,
             {"channels", "image_size"}),
            (fhvae, "fhvae", fhvae.FHVAEConfig, fhvae.FHVAETrainConfig, {"audio_features", "n_sequences"})):
        assert set(keys(name, "model")) == fields(model_cls) - model_set, name
        assert set(keys(name, "train")) == fields(train_cls) - workflow_set, name
        literal_enums(model_cls, keys(name, "model"))
        literal_enums(train_cls, keys(name, "train"))


def test_the_pseudolabel_and_evaluation_blocks_are_their_functions_parameters():
    """Every key of ``pseudolabels.{flow,landmarks,silence}`` and ``evaluate`` is a parameter of the function
    that reads it (flow's ``topk`` is ``k``), so no key is silently ignored."""
    import inspect

    from pseudolabels import flow, landmarks, silence
    from s3vae.evaluation.metrics import evaluate_model

    schema = yaml.safe_load(open(SCHEMA))["properties"]
    blocks = schema["pseudolabels"]["properties"]
    renamed = {"topk": "k"}
    for name, fn in (("flow", flow.compute_shard), ("landmarks", landmarks.compute_shard),
                     ("silence", silence.compute_shard)):
        params = set(inspect.signature(fn).parameters) - {"clips_path", "out_path"}
        assert {renamed.get(k, k) for k in blocks[name]["properties"]} == params, name
    assert set(schema["evaluate"]["properties"]) <= set(inspect.signature(evaluate_model).parameters)
