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



@pytest.mark.parametrize("static_lstm", ["forward", "bidirectional"])
def test_scc_positives_from_one_lstm_pass_equal_a_separate_pass_over_the_shuffled_clip(static_lstm):
    """encode(x, shuffle=perm) runs LSTM_f once over the clips and their reordered copies; the result must be
    what two passes give: the clips' own posteriors unchanged, the positives those of the shuffled clips."""
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg(static_lstm=static_lstm)).double().eval()
    x = torch.rand(5, 7, 3, 16, 16, dtype=torch.float64)
    perm = torch.argsort(torch.rand(5, 7), dim=1)
    assert not (perm == torch.arange(7)).all()
    with torch.no_grad():
        both = m.encode(x, shuffle=perm)
        alone = m.encode(x)
        shuffled = m.encode(x[torch.arange(5)[:, None], perm])  # the clips with their frames reordered
    for k in ("zf_mu", "zf_logvar", "zt_mu", "zt_logvar"):
        assert torch.allclose(both[k], alone[k], atol=1e-12), k
    assert torch.allclose(both["zf_pos_mu"], shuffled["zf_mu"], atol=1e-12)
    assert torch.allclose(both["zf_pos_logvar"], shuffled["zf_logvar"], atol=1e-12)
    assert not torch.allclose(both["zf_pos_mu"], both["zf_mu"])  # the order reaches z_f before training

def test_table4_widths_give_the_paper_sizes():
    m = S3VAE(S3VAEConfig())  # 64x64, Table 4, (d_zf, d_zt) = (256, 32)
    x = torch.rand(1, 2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        feats = m.frame_features(x)
        assert feats.shape == (1, 2, 128)                     # "visual feature of 128d"
        assert m.decode(torch.zeros(1, 256), torch.zeros(1, 2, 32)).shape == (1, 2, 3, 64, 64)
    assert m.lstm_f.hidden_size == 256 and m.lstm_t.hidden_size == 256


@pytest.mark.parametrize("static_lstm,zt_input", [("forward", "lstm_f"), ("bidirectional", "lstm_f"),
                                                  ("bidirectional", "lstm_f+frames"),
                                                  ("bidirectional", "head+frames")])
def test_dynamic_posterior_is_causal_and_static_sees_everything(static_lstm, zt_input):
    torch.manual_seed(0)
    # eval: BatchNorm uses running stats, no mixing across frames
    m = S3VAE(tiny_cfg(static_lstm=static_lstm, zt_input=zt_input)).eval()
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


def test_logvar_init_sets_the_posterior_variance_and_a_bad_zt_input_is_rejected():
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg(logvar_init=-4.0)).eval()
    with torch.no_grad():
        out = m.encode(torch.rand(2, 3, 3, 16, 16))
    for k in ("zf_logvar", "zt_logvar"):   # the bias dominates at the start: std ~ exp(-2)
        assert -6 < float(out[k].mean()) < -2
    with torch.no_grad():
        assert float(S3VAE(tiny_cfg()).encode(torch.rand(2, 3, 3, 16, 16))["zt_logvar"].mean()) > -2
    with pytest.raises(ValueError, match="zt_input"):
        tiny_cfg(zt_input="frames")


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


def test_bidirectional_static_lstm_reads_the_future_for_z_f_only():
    """With a BiLSTM for q(z_f | x_1:T), changing the LAST frame moves z_f through the backward
    direction but leaves every z_t before it untouched (LSTM_t reads the forward half only)."""
    torch.manual_seed(0)
    m = S3VAE(tiny_cfg(static_lstm="bidirectional")).eval()
    assert m.lstm_f.bidirectional and m.zf_head.fc.in_features == 2 * 24
    x = torch.rand(2, 6, 3, 16, 16)
    x2 = x.clone()
    x2[:, -1] = torch.rand_like(x2[:, -1])
    with torch.no_grad():
        a, b = m.encode(x), m.encode(x2)
        h_fwd = m.static_posterior(m.frame_features(x))[2]
    assert h_fwd.shape == (2, 6, 24)
    assert torch.allclose(a["zt_mu"][:, :-1], b["zt_mu"][:, :-1], atol=1e-6)
    assert not torch.allclose(a["zf_mu"], b["zf_mu"])
    with pytest.raises(ValueError, match="static_lstm"):
        tiny_cfg(static_lstm="backward")


@pytest.mark.parametrize("size,n", [(8, 1), (16, 2), (64, 4), (128, 5)])
def test_bad_widths_state_the_needed_layer_counts(size, n):
    """The message gives the number of widths this size needs, not the number given."""
    with pytest.raises(ValueError, match=rf"image_size {size} needs log2\({size}/4\) = {n} stride-2 encoder "
                                         rf"layers to reach 4x4, so {n} enc_widths; got {n + 1}"):
        tiny_cfg(image_size=size, enc_widths=[8] * (n + 1), dec_widths=[8] * (n + 1))
    with pytest.raises(ValueError, match=rf"needs {n} upsampling layers.*'upsample' decoder.*so {n + 1} dec_widths; "
                                         rf"got {n + 3}"):
        tiny_cfg(image_size=size, enc_widths=[8] * n, dec_widths=[8] * (n + 3))
    with pytest.raises(ValueError, match=rf"'transposed' decoder has one per width, so {n} dec_widths"):
        tiny_cfg(image_size=size, enc_widths=[8] * n, decoder="transposed", dec_widths=[8] * (n + 2))


@pytest.mark.parametrize("size", [0, 4, 12, 48, 100])
def test_image_size_not_a_power_of_two_times_four(size):
    with pytest.raises(ValueError, match=rf"image_size must be 4 \* 2\^k .*got {size}"):
        tiny_cfg(image_size=size)


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


def test_first_decoder_layer_as_a_matmul_equals_the_transposed_conv():
    from s3vae.model import Project4x4

    torch.manual_seed(0)
    fast = Project4x4(6, 5).double()
    conv = torch.nn.ConvTranspose2d(6, 5, 4, 1, 0).double()
    conv.load_state_dict(fast.state_dict())
    z = torch.randn(3, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    y1, y2 = fast(z), conv(z)
    assert y1.shape == (3, 5, 4, 4)
    assert torch.allclose(y1, y2, atol=1e-12)
    g = torch.randn_like(y1)
    g1 = torch.autograd.grad(y1, [z, fast.weight, fast.bias], g)
    g2 = torch.autograd.grad(y2, [z, conv.weight, conv.bias], g)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)


# --- audio frames and DSVAE posteriors (same framework) -----------------------------------------
@pytest.mark.parametrize("posterior,static_lstm", [("s3vae", "forward"), ("s3vae", "bidirectional"),
                                                    ("dsvae-factorised", "forward"), ("dsvae-full", "forward")])
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_every_posterior_and_modality_trains_with_all_losses(posterior, static_lstm, modality):
    from s3vae.losses import LossOptions, s3vae_loss

    torch.manual_seed(0)
    if modality == "video":
        cfg = S3VAEConfig(channels=1, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16,
                          hidden=16, z_f=8, z_t=4, dfp_out=9, posterior=posterior, static_lstm=static_lstm)
        x = torch.rand(4, 5, 1, 16, 16)
    else:
        cfg = S3VAEConfig(modality="audio", audio_features=80, audio_width=32, feat_dim=16, hidden=16, z_f=8, z_t=4,
                          dfp_out=1, posterior=posterior, static_lstm=static_lstm)
        x = torch.randn(4, 5, 80)
    model = S3VAE(cfg)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["zt_mu"].shape == (4, 5, 4) and out["zf"].shape == (4, 8)
    y = torch.randint(0, 9, (4, 4, 1)) if modality == "video" else torch.randint(0, 2, (4, 4))
    opts = LossOptions(lambda_scc=1.0, lambda_dfp=1.0, lambda_mi=1.0,
                       dfp_kind="topk" if modality == "video" else "binary")
    loss, parts = s3vae_loss(model, x, y, opts, dataset_size=100)
    loss.backward()
    assert torch.isfinite(loss) and {"scc", "dfp", "mi"} <= parts.keys()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_dsvae_factorised_posterior_of_z_t_reads_only_its_own_frame():
    torch.manual_seed(0)
    cfg = S3VAEConfig(channels=1, image_size=16, enc_widths=[8, 8], dec_widths=[16, 8, 8], feat_dim=16, hidden=16,
                      z_f=8, z_t=4, posterior="dsvae-factorised")
    model = S3VAE(cfg).eval()
    x = torch.rand(2, 5, 1, 16, 16)
    x2 = x.clone()
    x2[:, 3] = torch.rand(2, 1, 16, 16)                  # change frame 4 only
    a, b = model.encode(x)["zt_mu"], model.encode(x2)["zt_mu"]
    assert torch.allclose(a[:, [0, 1, 2, 4]], b[:, [0, 1, 2, 4]]) and not torch.allclose(a[:, 3], b[:, 3])
    # the full DSVAE posterior q(z_t | x_1:T, z_f) sees the whole clip: an earlier z_t changes too
    full = S3VAE(S3VAEConfig(**{**cfg.__dict__, "posterior": "dsvae-full"})).eval()
    assert not torch.allclose(full.encode(x)["zt_mu"][:, 0], full.encode(x2)["zt_mu"][:, 0])


def test_clip_level_dfp_target_is_cross_entropy_on_every_frame():
    from s3vae.losses import dfp_loss

    logits = torch.randn(3, 4, 9)
    y = torch.tensor([2, 0, 8])
    expected = torch.nn.functional.cross_entropy(logits.reshape(12, 9), y.repeat_interleave(4))
    assert torch.allclose(dfp_loss(logits, y, "clip"), expected)


def test_transposed_decoder_has_the_image_size_and_a_wrong_width_list_is_rejected():
    cfg = S3VAEConfig(image_size=32, enc_widths=[8, 8, 8], dec_widths=[16, 8, 8], decoder="transposed",
                      feat_dim=8, hidden=8, z_f=4, z_t=2)
    m = S3VAE(cfg)
    out = m(torch.rand(2, 3, 3, 32, 32))
    assert out["x_hat"].shape == (2, 3, 3, 32, 32)
    with pytest.raises(ValueError, match="transposed"):
        S3VAEConfig(image_size=32, enc_widths=[8, 8, 8], dec_widths=[16, 8, 8, 8], decoder="transposed")
