"""Losses of eq. 5-9 against values computed by hand or by slow independent implementations."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from s3vae.losses import (
    batch_identifiability,
    dfp_loss,
    kl_gaussians,
    log_normal,
    mi_loss,
    mws_log_marginal,
    pairwise_log_q,
    scc_loss,
    vae_loss,
)


def test_kl_of_identical_gaussians_is_zero():
    mu, logvar = torch.randn(4, 7), torch.randn(4, 7)
    assert torch.allclose(kl_gaussians(mu, logvar, mu, logvar), torch.zeros(4, 7), atol=1e-6)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(5, 3, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp()))
    assert torch.allclose(kl_gaussians(mq, lq, mp, lp), ref, atol=1e-5)
    assert (kl_gaussians(mq, lq, mp, lp) > 0).all()


def test_vae_loss_terms_by_hand():
    x = torch.zeros(2, 3, 1, 2, 2)
    x_hat = torch.full_like(x, 0.5)
    zf_mu, zf_lv = torch.zeros(2, 4), torch.zeros(2, 4)          # KL to N(0, I) = 0
    zt_mu, zt_lv = torch.ones(2, 3, 5), torch.zeros(2, 3, 5)
    pz_mu, pz_lv = torch.zeros(2, 3, 5), torch.zeros(2, 3, 5)     # KL = 0.5 * mu^2 per dim
    rec, kl_f, kl_t = vae_loss(x, x_hat, zf_mu, zf_lv, zt_mu, zt_lv, pz_mu, pz_lv)
    assert rec.item() == pytest.approx(3 * 4 * 0.25)               # per sequence: T*H*W pixels * 0.5^2
    assert kl_f.item() == pytest.approx(0.0, abs=1e-7)
    assert kl_t.item() == pytest.approx(3 * 5 * 0.5)


def test_triplet_loss_zero_beyond_margin_and_linear_inside():
    zf = torch.zeros(1, 2)
    pos = torch.tensor([[0.5, 0.0]])
    far_neg = torch.tensor([[3.0, 0.0]])            # d_pos - d_neg + 1 = 0.5 - 3 + 1 < 0
    assert scc_loss(zf, pos, far_neg).item() == 0.0
    near_neg = torch.tensor([[0.0, 1.0]])           # 0.5 - 1 + 1 = 0.5
    assert scc_loss(zf, pos, near_neg).item() == pytest.approx(0.5)
    assert scc_loss(zf, pos, near_neg, margin=2.0).item() == pytest.approx(1.5)


def test_dfp_topk1_is_cross_entropy_and_topk_averages():
    logits = torch.randn(2, 3, 9)
    y = torch.randint(0, 9, (2, 3, 1))
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), y.reshape(-1))
    assert dfp_loss(logits, y).item() == pytest.approx(ce.item(), rel=1e-6)
    y2 = torch.randint(0, 9, (2, 3, 2))
    logp = torch.log_softmax(logits, -1)
    by_hand = -sum(logp[b, t, y2[b, t, j]] for b in range(2) for t in range(3) for j in range(2)) / 12
    assert dfp_loss(logits, y2).item() == pytest.approx(by_hand.item(), rel=1e-6)


def _brute_log_q(z, mu, logvar, N):
    """log q(z(x_i)) by eq. 8 with explicit loops and torch.distributions."""
    M = z.shape[0]
    out = []
    for i in range(M):
        dens = [Normal(mu[j], (0.5 * logvar[j]).exp()).log_prob(z[i]).sum().exp() for j in range(M)]
        out.append(torch.log(torch.stack(dens).sum()) - math.log(N * M))
    return torch.stack(out)


def test_mws_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    M, D, N = 5, 3, 100
    f64 = dict(generator=g, dtype=torch.float64)
    mu, logvar = torch.randn(M, D, **f64), 0.3 * torch.randn(M, D, **f64)
    z = mu + torch.randn(M, D, **f64) * (0.5 * logvar).exp()
    fast = mws_log_marginal(pairwise_log_q(z, mu, logvar), N)
    assert torch.allclose(fast, _brute_log_q(z, mu, logvar, N), atol=1e-9)


def test_mi_loss_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    M, T, Df, Dt, N = 4, 3, 2, 3, 50
    f64 = dict(generator=g, dtype=torch.float64)
    zf_mu, zf_lv = torch.randn(M, Df, **f64), 0.2 * torch.randn(M, Df, **f64)
    zt_mu, zt_lv = torch.randn(M, T, Dt, **f64), 0.2 * torch.randn(M, T, Dt, **f64)
    zf = zf_mu + 0.5 * torch.randn(M, Df, **f64)
    zt = zt_mu + 0.5 * torch.randn(M, T, Dt, **f64)
    expected = 0.0
    for t in range(T):
        log_qf = _brute_log_q(zf, zf_mu, zf_lv, N)
        log_qt = _brute_log_q(zt[:, t], zt_mu[:, t], zt_lv[:, t], N)
        joint = _brute_log_q(torch.cat([zf, zt[:, t]], -1), torch.cat([zf_mu, zt_mu[:, t]], -1),
                             torch.cat([zf_lv, zt_lv[:, t]], -1), N)
        h_f, h_t, h_ft = -log_qf.mean(), -log_qt.mean(), -joint.mean()
        expected += h_f + h_t - h_ft                                  # eq. 7
    got = mi_loss(zf, zf_mu, zf_lv, zt, zt_mu, zt_lv, N)
    assert got.item() == pytest.approx(float(expected), rel=1e-9)
    mean = mi_loss(zf, zf_mu, zf_lv, zt, zt_mu, zt_lv, N, reduce="mean")   # C-DSVAE's per-step mean
    assert mean.item() == pytest.approx(float(expected) / T, rel=1e-9)
    with pytest.raises(ValueError, match="reduce"):
        mi_loss(zf, zf_mu, zf_lv, zt, zt_mu, zt_lv, N, reduce="max")


def test_log_normal_matches_torch():
    z, mu, lv = torch.randn(6), torch.randn(6), torch.randn(6)
    assert torch.allclose(log_normal(z, mu, lv), Normal(mu, (0.5 * lv).exp()).log_prob(z), atol=1e-5)


def test_mws_mi_with_sharp_z_t_penalises_all_of_z_f_information():
    """The degenerate regime of eq. 7-8 seen on FSDD: z_f and z_t independent by construction (z_t
    carries nothing about z_f), yet with z_t sharp the estimate is T * (identifiability of z_f) + T log N:
    the penalty grows with z_f's information although the true MI is 0."""
    g = torch.Generator().manual_seed(3)
    M, T, Df, Dt, N = 16, 5, 4, 8, 1000
    f64 = dict(generator=g, dtype=torch.float64)
    zt_mu = 50.0 * torch.randn(M, T, Dt, **f64)                 # far apart: every z_t names its clip
    zt_lv = torch.full((M, T, Dt), -4.0, dtype=torch.float64)
    zt = zt_mu + 0.1 * torch.randn(M, T, Dt, **f64)
    assert batch_identifiability(zt.transpose(0, 1), zt_mu.transpose(0, 1), zt_lv.transpose(0, 1)).min() \
        == pytest.approx(math.log(M), abs=1e-6)
    floor = T * math.log(N)
    for spread in (0.0, 1.0, 4.0):                              # z_f from uninformative to sharp
        zf_mu = spread * torch.randn(M, Df, **f64)
        zf_lv = torch.zeros(M, Df, dtype=torch.float64)
        zf = zf_mu + torch.randn(M, Df, **f64)
        ident_f = batch_identifiability(zf, zf_mu, zf_lv)
        mi = mi_loss(zf, zf_mu, zf_lv, zt, zt_mu, zt_lv, N)
        assert (mi - floor).item() == pytest.approx(T * ident_f.item(), abs=1e-6)
        if spread == 0.0:
            assert ident_f.item() == pytest.approx(0.0, abs=1e-9)
        if spread == 4.0:
            assert ident_f.item() > 1.0


def test_static_adversary_trains_the_head_on_z_f_detached_and_the_encoder_towards_uniform():
    from s3vae.losses import static_adversary_loss
    from s3vae.model import S3VAE, S3VAEConfig

    torch.manual_seed(0)
    m = S3VAE(S3VAEConfig(image_size=16, enc_widths=[8, 8], dec_widths=[8, 8, 8], feat_dim=8, hidden=8, z_f=4,
                          z_t=2, dfp_out=9, dfp_hidden=8, adv_steps=5))
    zf = torch.randn(3, 4, requires_grad=True)
    y = torch.randint(0, 9, (3, 4, 1))
    adv, conf = static_adversary_loss(m.static_adversary(zf.detach())[:, 1:],
                                      m.static_adversary(zf, frozen=True)[:, 1:], y)
    adv.backward(retain_graph=True)
    assert zf.grad is None and m.adversary[0].weight.grad is not None       # the head learns, z_f does not
    m.zero_grad()
    conf.backward()
    assert zf.grad is not None and m.adversary[0].weight.grad is None       # z_f is pushed, the head is not
    # uniform predictions reach the minimum, log K
    assert static_adversary_loss(torch.zeros(2, 3, 9), torch.zeros(2, 3, 9), torch.zeros(2, 3, 1, dtype=torch.long)
                                 )[1].item() == pytest.approx(math.log(9))
    with pytest.raises(ValueError, match="topk"):
        static_adversary_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.zeros(2, 3), "binary")


@pytest.mark.parametrize("scc_on", ["samples", "means"])
def test_scc_on_means_uses_posterior_means(scc_on):
    from s3vae.losses import LossOptions, s3vae_loss
    from s3vae.model import S3VAE, S3VAEConfig

    torch.manual_seed(0)
    m = S3VAE(S3VAEConfig(image_size=16, enc_widths=[8, 8], dec_widths=[8, 8, 8], feat_dim=8, hidden=8, z_f=4, z_t=2))
    x = torch.rand(4, 3, 3, 16, 16)
    # with the posterior variance inflated, samples make the triplet noisy; means do not depend on it
    with torch.no_grad():
        m.zf_head.fc.bias[4:] = 8.0
    vals = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        opts = LossOptions(lambda_scc=1, lambda_dfp=0, lambda_mi=0, scc_on=scc_on)
        vals.append(s3vae_loss(m, x, None, opts, dataset_size=10)[1]["scc"].item())
    if scc_on == "means":
        assert max(vals) < 1.5
    else:
        assert max(vals) > 5.0   # noise of exp(4) std per dimension swamps the margin
    with pytest.raises(ValueError, match="scc_on"):
        LossOptions(lambda_scc=1, lambda_dfp=0, lambda_mi=0, scc_on="mode")


def test_recon_weight_scales_only_the_reconstruction_term():
    from s3vae.losses import LossOptions, s3vae_loss
    from s3vae.model import S3VAE, S3VAEConfig

    m = S3VAE(S3VAEConfig(image_size=16, enc_widths=[8, 8], dec_widths=[8, 8, 8], feat_dim=8, hidden=8, z_f=4, z_t=2))
    x = torch.rand(4, 3, 3, 16, 16)
    out = {}
    for w in (1.0, 3.0):
        torch.manual_seed(0)
        out[w] = s3vae_loss(m, x, None, LossOptions(lambda_scc=0, lambda_dfp=0, lambda_mi=0, recon_weight=w),
                            dataset_size=10)
    (loss1, p1), (loss3, p3) = out[1.0], out[3.0]
    assert p1["recon"] == p3["recon"] and p1["kl_f"] == p3["kl_f"]        # logged unweighted
    assert loss3.item() == pytest.approx(loss1.item() + 2 * p1["recon"].item(), rel=1e-5)


# --- L_MI by CLUB ----------------------------------------------------------------------------
def _club_model(z_f=4, z_t=3):
    from s3vae.model import S3VAE, S3VAEConfig

    return S3VAE(S3VAEConfig(modality="audio", audio_features=8, audio_width=8, feat_dim=8, hidden=8, z_f=z_f, z_t=z_t,
                             dfp_out=1, mi_critic="club", critic_hidden=32))


def _fit_critic(model, sample, pairs, steps=200):
    """Fits q(z_t | z_f) on fresh batches from ``sample()`` (as training does), then the bound on a new one."""
    from s3vae.losses import club_mi, critic_fit

    opt = torch.optim.Adam(model.critic.parameters(), lr=1e-2)
    for _ in range(steps):
        fit = critic_fit(model, *sample(), pairs)
        opt.zero_grad()
        fit.backward()
        opt.step()
    return club_mi(model, *sample(), pairs).item()


def _latents(M=128, T=5, dependent=False, noise=0.1):
    zf = torch.randn(M, 4)
    zt = zf[:, None, :3].expand(M, T, 3) + noise * torch.randn(M, T, 3) if dependent else torch.randn(M, T, 3)
    return zf, zt   # dependent: z_t repeats part of z_f


@pytest.mark.parametrize("pairs", ["step", "sequence"])
def test_club_bound_is_near_zero_for_independent_latents_and_large_for_dependent(pairs):
    torch.manual_seed(0)
    low = _fit_critic(_club_model(), _latents, pairs)
    high = _fit_critic(_club_model(), lambda: _latents(dependent=True), pairs)
    assert abs(low) < 0.5 and high > 10


def test_mws_saturates_with_sharp_posteriors_where_club_does_not():
    """eq. 8 at batch 16 with sharp posteriors: the same estimate for dependent and independent latents."""
    torch.manual_seed(0)
    est = {}
    for dependent in (False, True):
        zf, zt = _latents(M=16, T=4, dependent=dependent, noise=0.0)
        lv_f, lv_t = torch.full_like(zf, -8.0), torch.full_like(zt, -8.0)
        club = _fit_critic(_club_model(), lambda: _latents(M=16, T=4, dependent=dependent), "step")
        est[dependent] = (mi_loss(zf, zf, lv_f, zt, zt, lv_t, 9000, reduce="mean").item(), club)
    (mws_i, club_i), (mws_d, club_d) = est[False], est[True]
    assert mws_i == pytest.approx(mws_d, rel=0.01)          # MWS cannot tell them apart
    assert club_d > club_i + 5                              # CLUB can


@pytest.mark.parametrize("grad,reaches", [("zt", {"zt"}), ("zf", {"zf"}), ("both", {"zf", "zt"})])
def test_club_bound_sends_its_gradient_only_to_the_latent_named(grad, reaches):
    from s3vae.losses import club_mi, critic_fit

    torch.manual_seed(0)
    model = _club_model()
    zf, zt = torch.randn(8, 4, requires_grad=True), torch.randn(8, 5, 3, requires_grad=True)
    bound, fit = club_mi(model, zf, zt, "step", grad), critic_fit(model, zf, zt, "step")
    got = torch.autograd.grad(bound, [zf, zt], allow_unused=True, retain_graph=True)
    assert {n for n, g in zip(("zf", "zt"), got) if g is not None and g.abs().sum() > 0} == reaches
    # the bound leaves q's weights alone; the likelihood term trains q and reaches no latent
    params = list(model.critic.parameters())
    assert all(g is None for g in torch.autograd.grad(bound, params, allow_unused=True, retain_graph=True))
    assert all(g is None for g in torch.autograd.grad(fit, [zf, zt], allow_unused=True, retain_graph=True))
    assert all(g is not None for g in torch.autograd.grad(fit, params, allow_unused=True))


def test_s3vae_loss_with_club_logs_the_estimate_its_fit_and_gradient_norm():
    from s3vae.losses import LossOptions, s3vae_loss

    torch.manual_seed(0)
    model = _club_model()
    x = torch.randn(4, 5, 8)
    y = torch.randint(0, 2, (4, 5))
    opts = LossOptions(lambda_scc=1, lambda_dfp=1, lambda_mi=10, dfp_kind="binary", dfp_offset=0, mi_estimator="club")
    loss, parts = s3vae_loss(model, x, y, opts, dataset_size=100)
    loss.backward()
    assert {"mi", "mi_fit", "mi_grad"} <= parts.keys() and parts["mi_grad"] > 0
    assert all(p.grad is not None for p in model.critic.parameters())   # fitted jointly: no fit_critic given
    with pytest.raises(ValueError, match="mi_estimator"):
        LossOptions(mi_estimator="infonce")


def test_with_its_own_fitter_the_critic_is_fitted_before_the_bound_and_left_out_of_the_model_loss():
    from s3vae.losses import LossOptions, s3vae_loss
    from s3vae.train import CriticFitter

    torch.manual_seed(0)
    model = _club_model()
    fitter = CriticFitter(model, steps=3, lr=1e-3, pairs="step")
    before = [p.detach().clone() for p in fitter.params]
    opts = LossOptions(lambda_scc=1, lambda_dfp=1, lambda_mi=10, dfp_kind="binary", dfp_offset=0, mi_estimator="club")
    loss, parts = s3vae_loss(model, torch.randn(4, 5, 8), torch.randint(0, 2, (4, 5)), opts, 100, fit_critic=fitter)
    assert any(not torch.equal(a, b) for a, b in zip(before, fitter.params))   # q took its 3 steps
    fitter.opt.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in model.critic.parameters())             # the model's loss leaves q alone
    assert torch.isfinite(parts["mi_fit"]) and parts["mi_grad"] > 0


def test_club_bound_is_float32_under_bfloat16_autocast():
    """The bound divides by exp(log-variance): under autocast it is still computed in float32, so it
    equals the float32 bound where bfloat16's 8-bit mantissa would not."""
    from s3vae.losses import club_mi, critic_fit

    torch.manual_seed(0)
    model = _club_model(z_f=16, z_t=8)
    zf, zt = torch.randn(16, 16), torch.randn(16, 5, 8) * 3
    ref, ref_fit = club_mi(model, zf, zt, "step", "zf"), critic_fit(model, zf, zt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, fit = club_mi(model, zf, zt, "step", "zf"), critic_fit(model, zf, zt)
        assert model.critic_q(zf)[0].dtype == torch.bfloat16     # autocast is on around it
    assert got.dtype == fit.dtype == torch.float32
    assert fit.item() == ref_fit.item() and got.item() == ref.item()


@pytest.mark.parametrize("where", ["bound", "critic"])
def test_a_non_finite_l_mi_stops_training_naming_the_term_with_the_weights_untouched(tmp_path, where):
    """A critic whose log-variance overflows (or a diverged fit) gives a non-finite bound: training
    stops before any optimiser step, with a message that names L_MI or the critic's fit."""
    from s3vae.train import CriticFitter, nonfinite_message

    torch.manual_seed(0)
    model = _club_model()
    with torch.no_grad():
        model.critic[-1].fc.bias[3:] = -1e5                  # log-variance: exp(-1e5) = 0, a division by 0
    if where == "critic":
        fitter = CriticFitter(model, steps=2, lr=1e-3, pairs="step")
        before = [p.detach().clone() for p in fitter.params]
        with pytest.raises(FloatingPointError, match="CLUB critic's fit"):
            fitter(torch.randn(4, 4), torch.randn(4, 5, 3))
        assert all(torch.equal(a, b) for a, b in zip(before, fitter.params))
        return
    from s3vae.losses import club_mi
    parts = {"recon": torch.tensor(1.0), "mi": club_mi(model, torch.randn(4, 4), torch.randn(4, 5, 3), "step", "zf")}
    msg = nonfinite_message(parts, "epoch 1, step 3", tmp_path / "last.pt")
    assert "non-finite L_MI (mi=" in msg and "epoch 1, step 3" in msg and "λ3" in msg and "recon=1" in msg
