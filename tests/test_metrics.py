"""Appendix C metrics on judge outputs with known answers, and the generation protocol."""

import math

import numpy as np
import pytest
import torch

from s3vae.evaluation.judge import Judge, JudgeConfig
from s3vae.evaluation.metrics import appendix_c_metrics, generate, summary_row
from s3vae.model import S3VAE, S3VAEConfig


def test_confident_and_uniform_judges():
    K = 9
    onehot = np.eye(K)[np.arange(90) % K]
    m = appendix_c_metrics(onehot, np.arange(90) % K)
    assert m["acc"] == 1.0
    assert m["IS"] == pytest.approx(K, rel=1e-6)            # exp(H(y) - H(y|x)) = exp(ln K - 0)
    assert m["H_y_x"] == pytest.approx(0.0, abs=1e-6)
    assert m["H_y"] == pytest.approx(math.log(K))
    uniform = np.full((10, K), 1 / K)
    m = appendix_c_metrics(uniform, np.zeros(10, int))
    assert m["IS"] == pytest.approx(1.0) and m["H_y_x"] == pytest.approx(math.log(K))


def test_mode_collapse_has_is_one_and_zero_inter_entropy():
    probs = np.tile(np.eye(6)[2], (12, 1))
    labels = np.arange(12) % 6
    m = appendix_c_metrics(probs, labels)
    assert m["acc"] == pytest.approx(2 / 12)
    assert m["IS"] == pytest.approx(1.0) and m["H_y"] == pytest.approx(0.0, abs=1e-9)


def test_summary_row_averages_static_and_dynamic_accuracy():
    res = {"dynamic": {"acc": 0.9, "IS": 8.0, "H_y_x": 0.1, "H_y": 2.1},
           "static": {"acc": 0.7, "IS": 5.0, "H_y_x": 0.3, "H_y": 1.7}}
    row = summary_row(res)
    assert row["acc"] == pytest.approx(0.8) and row["IS"] == 8.0 and row["acc_static"] == 0.7


def test_generation_protocol_keeps_the_right_factor():
    torch.manual_seed(0)
    cfg = S3VAEConfig(channels=3, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=16,
                      z_f=8, z_t=4)
    m = S3VAE(cfg).eval()
    x = torch.rand(3, 5, 3, 16, 16)
    enc = m.encode(x)
    torch.manual_seed(1)
    a = generate(m, x, "static")
    torch.manual_seed(1)
    zt = m.sample_zt(3, 5)
    assert torch.allclose(a, m.decode(enc["zf_mu"], zt))                 # z_f kept, z_1:T from the prior
    torch.manual_seed(2)
    b = generate(m, x, "dynamic")
    torch.manual_seed(2)
    zf = torch.randn(3, 8)
    assert torch.allclose(b, m.decode(zf, enc["zt_mu"]))                 # z_1:T kept, z_f ~ N(0, I)


def test_judge_heads():
    j = Judge(JudgeConfig(channels=3, image_size=16, frames=5, heads={"action": 9, "hair": 6}, dynamic=["action"],
                          width=8))
    out = j(torch.rand(2, 5, 3, 16, 16))
    assert out["action"].shape == (2, 9) and out["hair"].shape == (2, 6)


def test_balanced_indices_keep_the_rarest_class_count_of_every_class():
    import numpy as np

    from s3vae.evaluation.metrics import balanced_indices

    y = np.array([0] * 10 + [1] * 3 + [2] * 5)
    keep = balanced_indices(y, seed=0)
    assert np.bincount(y[keep]).tolist() == [3, 3, 3]
    assert np.array_equal(keep, balanced_indices(y, seed=0)) and np.all(np.diff(keep) > 0)
    assert len(balanced_indices(np.arange(9) % 9)) == 9   # balanced already: everything kept


def test_swap_partners_differ_in_the_dynamic_label_and_a_static_one():
    from s3vae.evaluation.metrics import swap_partners

    dyn = np.array([0, 0, 1, 1, 2])
    stat = np.array([[0], [1], [0], [1], [0]])
    p = swap_partners(dyn, stat, seed=0)
    for i, j in enumerate(p):
        assert dyn[j] != dyn[i] and stat[j, 0] != stat[i, 0]
    assert (swap_partners(np.zeros(3, int)) == -1).all()     # nobody to swap with


def test_max_pooled_judge_reads_any_image_size_with_the_same_head():
    torch.manual_seed(0)
    cfg = dict(channels=1, frames=2, heads={"digit1": 10}, dynamic=[], width=8, spatial_pool="max")
    small, large = Judge(JudgeConfig(image_size=32, **cfg)), Judge(JudgeConfig(image_size=64, **cfg))
    assert small.heads["digit1"][1].in_features == large.heads["digit1"][1].in_features   # pooled, not flattened
    assert small(torch.rand(3, 2, 1, 32, 32))["digit1"].shape == (3, 10)
    flat = Judge(JudgeConfig(image_size=32, **{**cfg, "spatial_pool": "flatten"}))
    assert sum(p.numel() for p in flat.parameters()) != sum(p.numel() for p in small.parameters())


def test_vgg_judge_halves_the_map_with_pooling_and_rejects_unknown_frame_nets():
    cfg = dict(channels=1, frames=2, heads={"digit1": 10}, dynamic=[], width=8, spatial_pool="max")
    vgg = Judge(JudgeConfig(image_size=32, frame_net="vgg", **cfg))
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in vgg.frame_net) == 3        # 32 -> 16 -> 8 -> 4
    assert vgg(torch.rand(3, 2, 1, 32, 32))["digit1"].shape == (3, 10)
    with pytest.raises(ValueError, match="frame_net"):
        Judge(JudgeConfig(image_size=32, frame_net="resnet", **cfg))


def test_gaussian_blur_keeps_the_mean_and_flat_images_and_smooths_an_edge():
    from s3vae.evaluation.judge import gaussian_blur, random_blur

    flat = torch.full((2, 3, 3, 8, 8), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 1.0])), flat)
    edge = torch.zeros(1, 1, 1, 8, 8)
    edge[..., 4:] = 1.0
    y = gaussian_blur(edge, torch.tensor([1.0]))
    assert 0 < y[0, 0, 0, 0, 3] < 0.5 < y[0, 0, 0, 0, 4] < 1          # the step is spread over both sides
    assert torch.equal(gaussian_blur(edge, torch.tensor([0.0])), edge)  # sigma 0: unchanged
    g = torch.Generator().manual_seed(0)
    assert random_blur(torch.rand(4, 2, 3, 8, 8), 1.0, g).shape == (4, 2, 3, 8, 8)


class _CodeModel:
    """A stand-in S3VAE: z_f = the clip's static code (pixel 0 of frame 0), z_1:T = its dynamic code
    (pixel 1 of every frame); ``leaky`` decodes the dynamic code from z_f instead of z_1:T."""

    def __init__(self, leaky=False):
        self.leaky = leaky

    def encode(self, x):
        flat = x.flatten(2)                                               # (B, T, C*H*W)
        return {"zf_mu": flat[:, 0, :2], "zt_mu": flat[:, :, 1:2]}

    def decode(self, zf, zt):
        dyn = zf[:, None, 1:2].expand_as(zt) if self.leaky else zt
        out = torch.zeros(len(zf), zt.shape[1], 1, 2, 2)
        out[:, :, 0, 0, 0] = zf[:, None, 0]
        out[:, :, 0, 0, 1] = dyn[..., 0]
        return out


def _code_judge(x):  # reads the codes back: static from pixel 0, dynamic from pixel 1
    codes = (x.flatten(2)[:, 0, :2] * 255).round().long()
    return {"style": torch.nn.functional.one_hot(codes[:, 0], 4).float(),
            "action": torch.nn.functional.one_hot(codes[:, 1], 3).float()}


def test_swap_scores_find_where_the_decoder_reads_the_motion(tmp_path):
    from s3vae.data import ClipDataset, atomic_h5, create_frames
    from s3vae.evaluation.metrics import latent_swap, swap_scores

    rng = np.random.default_rng(0)
    style, action = rng.integers(0, 4, 40), rng.integers(0, 3, 40)
    frames = np.zeros((40, 3, 2, 2, 1), np.uint8)
    frames[:, :, 0, 0, 0] = style[:, None]
    frames[:, :, 0, 1, 0] = action[:, None]
    with atomic_h5(tmp_path / "test_0.h5") as f:
        create_frames(f, frames)
        f.create_dataset("labels/style", data=style)
        f.create_dataset("labels/action", data=action)
    data = ClipDataset([str(tmp_path / "test_0.h5")], preload=True)
    # the codes are pixel values / 255 in the clips; the stand-in decoder writes them back unchanged
    good = swap_scores(*latent_swap(_CodeModel()), _code_judge, data, ["style"], ["action"], batch_size=16)
    assert good["swap"]["dynamic"] == 1.0 and good["swap"]["static"] == 1.0
    assert good["reconstruction"]["per_label"] == {"style": 1.0, "action": 1.0}
    leaky = swap_scores(*latent_swap(_CodeModel(leaky=True)), _code_judge, data, ["style"], ["action"], batch_size=16)
    assert leaky["swap"]["dynamic"] == 0.0          # the partner always has another action
    assert leaky["swap"]["static"] == 1.0 and leaky["reconstruction"]["dynamic"] == 1.0
    no_dynamic = swap_scores(*latent_swap(_CodeModel()), _code_judge, data, ["style"], [], batch_size=16)
    assert no_dynamic["swap"]["static"] == 1.0 and "dynamic" not in no_dynamic["swap"]
