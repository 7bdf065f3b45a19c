"""Model shapes, causality of q(z_t | x_<=t), and config checks."""

import pytest
import torch

from s3vae.model import S3VAE, S3VAEConfig


def tiny_cfg(**kw):
    base = dict(channels=3, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=24,
                z_f=6, z_t=4, dfp_out=9, dfp_hidden=12)
    base.update(kw)
    return S3VAEConfig(**base)


def test_forward_shapes():
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg())
    x = torch.rand(5, 7, 3, 16, 16)
    out = m(x)
    assert out["x_hat"].shape == x.shape
    assert out["zf"].shape == (5, 6) and out["zf_mu"].shape == (5, 6)
    assert out["zt"].shape == (5, 7, 4) and out["pz_mu"].shape == (5, 7, 4)
    assert out["dfp_logits"].shape == (5, 7, 9)
    assert ((out["x_hat"] >= 0) & (out["x_hat"] <= 1)).all()
    assert m.sample_zt(3, 7).shape == (3, 7, 4)


def test_table4_widths_give_the_paper_sizes():
    m = S3VAE(S3VAEConfig())  # 64x64, Table 4, (d_zf, d_zt) = (256, 32)
    x = torch.rand(1, 2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        feats = m.frame_features(x)
        assert feats.shape == (1, 2, 128)                     # "visual feature of 128d"
        assert m.decode(torch.zeros(1, 256), torch.zeros(1, 2, 32)).shape == (1, 2, 3, 64, 64)
    assert m.lstm_f.hidden_size == 256 and m.lstm_t.hidden_size == 256


def test_dynamic_posterior_is_causal_and_static_sees_everything():
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg()).eval()   # eval: BatchNorm uses running stats, no mixing across frames
    x = torch.rand(2, 6, 3, 16, 16)
    t = 3
    x2 = x.clone()
    x2[:, t + 1:] = torch.rand_like(x2[:, t + 1:])   # change frames t+2..T (0-based t+1..)
    with torch.no_grad():
        a, b = m.encode(x), m.encode(x2)
    assert torch.allclose(a["zt_mu"][:, :t + 1], b["zt_mu"][:, :t + 1], atol=1e-6)
    assert torch.allclose(a["zt_logvar"][:, :t + 1], b["zt_logvar"][:, :t + 1], atol=1e-6)
    assert not torch.allclose(a["zt_mu"][:, t + 1:], b["zt_mu"][:, t + 1:])
    assert not torch.allclose(a["zf_mu"], b["zf_mu"])           # q(z_f | x_1:T) reads every frame


def test_prior_is_causal():
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg()).eval()
    z = torch.randn(2, 5, 4)
    z2 = z.clone()
    z2[:, 2:] += 1.0
    with torch.no_grad():
        p, p2 = m.prior(z), m.prior(z2)
    # p(z_t | z_<t): changing z_3.. leaves the priors of z_1..z_3 unchanged
    assert torch.allclose(p[0][:, :3], p2[0][:, :3])
    assert not torch.allclose(p[0][:, 3:], p2[0][:, 3:])


def test_bad_widths_rejected():
    with pytest.raises(ValueError, match="stride-2"):
        tiny_cfg(enc_widths=[8, 8, 8])
    with pytest.raises(ValueError, match="upsamplings"):
        tiny_cfg(dec_widths=[8, 8])


def test_fused_upsample_conv_equals_upsample_then_conv():
    from s3vae.model import UpsampleConv2d

    torch.manual_seed(0)
    fused = UpsampleConv2d(5, 7).double()
    fused.fused = True                       # the phase form (used for wide layers)
    plain = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                torch.nn.Conv2d(5, 7, 3, 1, 1)).double()
    plain[1].load_state_dict(fused.state_dict())
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    y1, y2 = fused(x), plain(x)
    assert y1.shape == (3, 7, 8, 12)
    assert torch.allclose(y1, y2, atol=1e-12)
    g = torch.randn_like(y1)
    g1 = torch.autograd.grad(y1, [x, fused.weight, fused.bias], g)
    g2 = torch.autograd.grad(y2, [x, plain[1].weight, plain[1].bias], g)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)
    fused.fused = False                      # the plain form (narrow layers) is the same function
    assert torch.allclose(fused(x), y2, atol=1e-12)
