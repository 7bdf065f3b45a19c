"""s3vae.configs: how config.yaml's sections become a model's TrainConfig and S3VAEConfig."""

import pytest
import yaml

from s3vae import configs
from s3vae.model import S3VAEConfig
from s3vae.train import TrainConfig
from s3vae.utils import from_dict


def config():
    return yaml.safe_load(open("config/config.yaml"))


def test_every_default_model_config_builds():
    c = config()
    for ds in c["datasets"]:
        for v in c["variants"]:
            if c["variants"][v].get("dfp_labels") == "ground_truth" and "dfp_sv" not in c["datasets"][ds]:
                with pytest.raises(ValueError, match="dfp_sv"):
                    configs.train_config(c, ds, v, 1)
                continue
            from_dict(S3VAEConfig, configs.model_config(c, ds, v))
            from_dict(TrainConfig, configs.train_config(c, ds, v, 1))


def test_adversary_follows_the_variant_and_the_dataset_scale():
    c = config()
    assert configs.train_config(c, "sprites", "full", 1)["lambda_adv"] > 0
    assert configs.model_config(c, "sprites", "full")["adv_steps"] == c["datasets"]["sprites"]["frames"]
    for v in ("no-adv", "baseline", "dsvae", "baseline-sv"):       # the paper's objectives: no adversary
        assert configs.train_config(c, "sprites", v, 1)["lambda_adv"] == 0
        assert "adv_steps" not in configs.model_config(c, "sprites", v)
    # audio and MUG scale it to 0: their pseudo-labels are binary or regressed
    for ds in ("fsdd", "mug"):
        assert configs.train_config(c, ds, "full", 1)["lambda_adv"] == 0
        assert "adv_steps" not in configs.model_config(c, ds, "full")


def test_lambda_scale_keeps_zero_terms_and_scales_the_others():
    c = config()
    t = configs.train_config(c, "fsdd", "full", 3)
    v = c["variants"]["full"]
    assert t["lambda_scc"] == v["lambda_scc"] * c["datasets"]["fsdd"]["lambda_scale"]["scc"]
    assert t["lambda_dfp"] == v["lambda_dfp"] and t["seed"] == 3
    assert configs.train_config(c, "fsdd", "baseline", 1)["lambda_scc"] == 0


def test_config_overrides_get_the_types_a_config_file_gives():
    """`--config 'datasets={"mug": {...}}'` arrives with every nested scalar a string (Snakemake reads it
    with YAML's base loader): booleans and numbers are typed where the schema wants them, nothing else."""
    import json

    from jsonschema.validators import validator_for
    from snakemake.utils import update_config

    schema = json.load(open("workflow/schemas/config.schema.json"))
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
