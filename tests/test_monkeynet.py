"""MonkeyNet on tiny data: shapes, keypoints, the identity flow, learning, relative transfer, seeded
reruns and resume, and the swap score it feeds."""

import numpy as np
import pytest
import torch
from conftest import labelled_clip_shard

from s3vae.comparisons.monkeynet import (
    MonkeyNet,
    MonkeyNetConfig,
    MonkeyNetTrainConfig,
    coordinate_grid,
    evaluate,
    load,
    reconstruction_loss,
    train,
    transfer_pair,
)
from s3vae.data import ClipDataset
from s3vae.evaluation.metrics import swap_scores

CFG = MonkeyNetConfig(channels=3, image_size=16, keypoints=3, kp_widths=[4, 8], motion_widths=[4, 8],
                      gen_widths=[4, 8])



def oracle(x):
    """A judge that reads the skin from the red level and the action from the bar's column in frame 1."""
    skin = (x[:, :, 0].mean((1, 2, 3)) > 0.4).long()
    column = x[:, 1, 1].mean(1).argmax(-1)                               # (B,): the bar's column at t = 1
    action = (column - 1).clamp(0, 2)
    return {"skin": torch.nn.functional.one_hot(skin, 2).float(),
            "action": torch.nn.functional.one_hot(action, 3).float()}


def test_shapes_and_keypoints_in_the_frame():
    torch.manual_seed(0)
    m = MonkeyNet(CFG)
    x, y = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    kp = m.keypoint_detector(x)
    assert kp.mean.shape == (5, 3, 2) and kp.cov.shape == (5, 3, 2, 2)
    assert kp.mean.abs().max() <= 1                                      # soft-argmax of pixel centres
    assert torch.linalg.eigvalsh(kp.cov).min() > 0                         # a covariance, invertible
    with torch.no_grad():
        out = m.reconstruct(x, y)
    assert out["prediction"].shape == (5, 3, 16, 16) and out["flow"].shape == (5, 16, 16, 2)
    assert out["mask"].shape == (5, 4, 16, 16)                           # K keypoints + the background
    assert torch.allclose(out["mask"].sum(1), torch.ones(5, 16, 16))
    assert 0 <= float(out["prediction"].min()) and float(out["prediction"].max()) <= 1
    video = m.eval().animate(x, torch.rand(5, 6, 3, 16, 16))
    assert video.shape == (5, 6, 3, 16, 16)


def test_flow_is_the_identity_when_nothing_moves():
    torch.manual_seed(0)
    m = MonkeyNet(CFG)
    x = torch.rand(2, 3, 16, 16)
    kp = m.keypoint_detector(x)
    flow = m(x, kp, kp)["flow"]                                          # equal keypoints, untrained residual
    assert torch.allclose(flow, coordinate_grid(16, 16).expand_as(flow), atol=1e-6)


def test_relative_transfer_starts_at_the_source_and_follows_the_driving_motion():
    torch.manual_seed(0)
    m = MonkeyNet(CFG).eval()
    source, driving = torch.rand(2, 3, 16, 16), torch.rand(2, 5, 3, 16, 16)
    video = m.animate(source, driving)
    with torch.no_grad():
        kp = m.keypoint_detector(source)
        first = m(source, kp, kp)["prediction"]                           # no motion yet at the first frame
    assert torch.allclose(video[:, 0], first, atol=1e-5)
    still = m.animate(source, driving[:, :1].expand(-1, 4, -1, -1, -1))  # a video that does not move
    assert torch.allclose(still, first[:, None].expand_as(still), atol=1e-5)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("monkeynet")
    return labelled_clip_shard(d / "train_0.h5"), labelled_clip_shard(d / "test_0.h5", n=12, seed=1)


def test_training_steps_halve_the_loss_on_a_fixed_batch(shards):
    torch.manual_seed(0)
    m = MonkeyNet(CFG)
    frames = ClipDataset([shards[0]], preload=True)
    source = torch.stack([frames[i]["frames"][0] for i in range(8)])        # (B, C, H, W)
    driving = torch.stack([frames[i]["frames"][2] for i in range(8)])       # the same clips two frames on
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = reconstruction_loss(m, source, driving).item()
    for _ in range(15):
        loss = reconstruction_loss(m, source, driving)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert reconstruction_loss(m, source, driving).item() < 0.5 * first


def test_seeded_training_reproduces_weights_and_resumes(tmp_path, shards):
    tcfg = MonkeyNetTrainConfig(epochs=1, batch_size=8, seed=3, device="cpu", threads=1)
    a = train([shards[0]], tmp_path / "a.pt", tmp_path / "ck_a", CFG, tcfg, log=lambda m: None)
    b = train([shards[0]], tmp_path / "b.pt", tmp_path / "ck_b", CFG, tcfg, log=lambda m: None)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len(a["history"]) == 1 and np.isfinite(a["history"][0]["l1"])
    more = MonkeyNetTrainConfig(epochs=2, batch_size=8, seed=3, device="cpu", threads=1)
    logs = []
    c = train([shards[0]], tmp_path / "c.pt", tmp_path / "ck_a", CFG, more, log=logs.append)
    assert any("resumed" in m for m in logs) and len(c["history"]) == 2
    fresh = train([shards[0]], tmp_path / "d.pt", tmp_path / "ck_d", CFG, more, log=lambda m: None)
    assert all(torch.equal(c["model"][k], fresh["model"][k]) for k in c["model"])   # resuming changes nothing
    assert isinstance(load(tmp_path / "c.pt"), MonkeyNet)


class _PerfectAnimator:
    """A stand-in MonkeyNet whose animation keeps the source frame's colour and copies the driving bar."""

    def animate(self, source, driving):
        out = driving.clone()
        out[:, :, 0] = source[:, None, 0]
        return out


def test_swap_score_of_a_stand_in_animator_has_the_swap_table_structure(shards):
    data = ClipDataset([shards[1]], preload=True)
    res = swap_scores(*transfer_pair(_PerfectAnimator()), oracle, data, ["skin"], ["action"], batch_size=5)
    assert set(res) == {"swap", "reconstruction"}
    for kind in res:
        assert set(res[kind]) == {"per_label", "n", "static", "dynamic"} and res[kind]["n"] > 0
        assert res[kind]["per_label"] == {"skin": 1.0, "action": 1.0}     # A's colour, B's (or A's own) motion
    copy_b = swap_scores(lambda a, b: b, lambda a: a, oracle, data, ["skin"], ["action"], batch_size=5)
    assert copy_b["swap"]["dynamic"] == 1.0 and copy_b["swap"]["static"] == 0.0   # partners differ in skin


def test_evaluate_gives_swap_scores_of_a_trained_model(tmp_path, shards):
    tcfg = MonkeyNetTrainConfig(epochs=1, batch_size=8, seed=0, device="cpu", threads=1)
    train([shards[0]], tmp_path / "m.pt", tmp_path / "ck", CFG, tcfg, log=lambda m: None)
    res = evaluate(load(tmp_path / "m.pt"), oracle, [shards[1]], ["skin"], ["action"], batch_size=5)
    assert set(res) == {"swap", "reconstruction"}
    assert all(0 <= v <= 1 for kind in res for v in res[kind]["per_label"].values())


def test_motion_transfer_figure_has_a_panel_of_five_rows_per_pair(tmp_path):
    from PIL import Image

    from s3vae.reporting.figures import motion_transfer_figure

    m = MonkeyNet(CFG).eval()
    a, b = torch.rand(2, 4, 3, 16, 16), torch.rand(2, 4, 3, 16, 16)
    swaps = {"S3VAE": lambda a, b: b, "DSVAE": lambda a, b: a, "MonkeyNet": transfer_pair(m)[0]}
    img = Image.open(motion_transfer_figure(a, b, swaps, tmp_path / "fig.png", scale=1))
    rows = 2 * 5 + 1                                                      # A, B, three swaps; a white row between
    assert img.height == rows * (16 + 2) + 2 and img.width > 4 * (16 + 2)


@pytest.mark.parametrize("overrides", [[], ["config/paper.yaml"]])
def test_the_config_block_builds_a_model_for_every_video_dataset(overrides):
    from snakemake.common.configfile import load_configfile
    from snakemake.utils import update_config

    from s3vae.configs import monkeynet_configs
    from s3vae.utils import from_dict

    c = load_configfile("config/config.yaml")
    for path in overrides:
        update_config(c, load_configfile(path))
    for ds, d in c["datasets"].items():
        if d["modality"] == "video":
            model, tcfg = monkeynet_configs(c, ds, 2)
            cfg = from_dict(MonkeyNetConfig, model)
            assert cfg.image_size == d["model"]["image_size"] and cfg.channels == d["model"]["channels"]
            assert from_dict(MonkeyNetTrainConfig, tcfg).seed == 2
