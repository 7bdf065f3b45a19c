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
