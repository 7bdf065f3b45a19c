"""Losses of S3VAE, numbered as in the paper.

    L = L_VAE + λ1 L_SCC + λ2 L_DFP + λ3 L_MI                                   (eq. 9)

All losses are per sequence, averaged over the minibatch. The reconstruction term -log p(x_t|z_f,z_t)
is a Gaussian with fixed variance (squared error summed over pixels and frames, as in DSVAE and
C-DSVAE) or a Bernoulli (binary cross-entropy), chosen by config.

L_MI has two estimators (``LossOptions.mi_estimator``): ``mws``, eq. 7-8 as written, and ``club``, the
contrastive log-ratio upper bound of Cheng et al. (ICML 2020) with a variational q(z_t | z_f), which is
made for *minimising* MI at small batches (``club_mi`` says why MWS is not, at batch 16).

The λ's come from the config's variants (App. D's); a dataset may scale them
(``datasets.<name>.lambda_scale``; docs/departures.md, "λ's for audio", says why and what was measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F

from s3vae.model import reparameterize
from s3vae.utils import check_literals

LOG_2PI = math.log(2 * math.pi)


def kl_gaussians(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) elementwise."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)


def vae_loss(x, x_hat, zf_mu, zf_logvar, zt_mu, zt_logvar, pz_mu, pz_logvar, recon: str = "mse"):
    """eq. 5: E_q[-sum_t log p(x_t|z_f,z_t)] + KL(q(z_f|x)||p(z_f)) + sum_t KL(q(z_t|x_<=t)||p(z_t|z_<t)).

    Returns (reconstruction, KL_f, KL_t), each averaged over the batch.
    """
    B = x.shape[0]
    if recon == "mse":
        rec = F.mse_loss(x_hat, x, reduction="sum") / B
    elif recon == "bce":
        rec = F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="sum") / B
    else:
        raise ValueError(f"unknown reconstruction likelihood {recon!r}")
    kl_f = kl_gaussians(zf_mu, zf_logvar, torch.zeros_like(zf_mu), torch.zeros_like(zf_logvar)).sum() / B
    kl_t = kl_gaussians(zt_mu, zt_logvar, pz_mu, pz_logvar).sum() / B
    return rec, kl_f, kl_t


def scc_loss(zf: torch.Tensor, zf_pos: torch.Tensor, zf_neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """eq. 6: max(D(z_f, z_f^pos) - D(z_f, z_f^neg) + m, 0), D Euclidean; batch mean."""
    d_pos = (zf - zf_pos).norm(dim=-1)
    d_neg = (zf - zf_neg).norm(dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()


def dfp_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "topk") -> torch.Tensor:
    """§4.2: L(phi_a(z_t), y), cross-entropy for labels, MSE for regressed signals.

    ``topk``: target (B, T', k) cell indices; the softmax over cells is trained towards the uniform
    distribution on the k labelled cells (k = 1 is ordinary cross-entropy). ``binary``: target
    (B, T') in {0, 1}. ``regression``: target (B, T', D). ``clip``: target (B,) class per clip, predicted
    from every z_t (the supervised reference baseline-sv with ground-truth labels).
    Logits (B, T', out). Mean over (B, T').
    """
    if kind == "topk":
        logp = F.log_softmax(logits, dim=-1)
        return -logp.gather(-1, target).mean(-1).mean()
    if kind == "clip":  # one label per clip (ground-truth action/expression, baseline-sv): every frame predicts it
        return F.cross_entropy(logits.flatten(0, 1), target[:, None].expand(logits.shape[:2]).flatten())
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
    if kind == "regression":  # (B, T', D) signals; per-frame vectors stored as (B, T', a, b) are flattened
        target = target.float().reshape(logits.shape)
        ok = torch.isfinite(target)  # NaN marks a clip without labels (e.g. no face found): masked out
        return F.mse_loss(logits[ok], target[ok]) if ok.any() else logits.sum() * 0.0
    raise ValueError(f"unknown DFP target kind {kind!r}")


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) elementwise (not summed)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 / logvar.exp())


def pairwise_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z(x_i) | x_j) for all pairs: z, mu, logvar (..., M, D) -> (..., M_i, M_j)."""
    return log_normal(z.unsqueeze(-2), mu.unsqueeze(-3), logvar.unsqueeze(-3)).sum(-1)


def mws_log_marginal(log_q_ij: torch.Tensor, dataset_size: int) -> torch.Tensor:
    """eq. 8: log q(z(x_i)) ≈ log sum_j q(z(x_i)|x_j) - log(N M), from the (..., M, M) matrix."""
    M = log_q_ij.shape[-1]
    return torch.logsumexp(log_q_ij, dim=-1) - math.log(dataset_size * M)


def mi_loss(zf, zf_mu, zf_logvar, zt, zt_mu, zt_logvar, dataset_size: int, reduce: str = "sum") -> torch.Tensor:
    """eq. 7: sum_t [H(z_f) + H(z_t) - H(z_f, z_t)], entropies by minibatch weighted sampling (eq. 8).

    zf* (M, Df); zt* (M, T, Dt). q(z_f, z_t | x) = q(z_f | x) q(z_t | x) (App. A), so the joint's
    pairwise log-density is the sum of the two. ``reduce="mean"``: the mean over t instead of the sum
    (C-DSVAE's code; the quick default, docs/departures.md).
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    lq_f = pairwise_log_q(zf, zf_mu, zf_logvar)                       # (M, M)
    zt, zt_mu, zt_logvar = (a.transpose(0, 1) for a in (zt, zt_mu, zt_logvar))  # (T, M, Dt)
    lq_t = pairwise_log_q(zt, zt_mu, zt_logvar)                       # (T, M, M)
    log_qf = mws_log_marginal(lq_f, dataset_size)                     # (M,)
    log_qt = mws_log_marginal(lq_t, dataset_size)                     # (T, M)
    log_qft = mws_log_marginal(lq_f.unsqueeze(0) + lq_t, dataset_size)  # (T, M)
    # H(z) = -E[log q(z)]  =>  H_f + H_t - H_ft = E[log q_ft - log q_f - log q_t]
    per_step = (log_qft - log_qf.unsqueeze(0) - log_qt).mean(-1)       # (T,)
    return per_step.sum() if reduce == "sum" else per_step.mean()


def batch_identifiability(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """E_i[log q(z(x_i)|x_i) - log (1/M) sum_j q(z(x_i)|x_j)]: how well a sample names its own clip
    within the minibatch, in nats, between 0 (posteriors overlap) and log M (each sample explained by
    its own clip only). z, mu, logvar (..., M, D) -> (...).

    A diagnostic for eq. 7-8: when z_t is this sharp (close to log M), each step's MWS estimate of
    I(z_f; z_t) reduces to the identifiability of z_f (the constant log N aside), so L_MI then
    penalises any information in z_f, not only what z_f shares with z_t (tested)."""
    lq = pairwise_log_q(z, mu, logvar)                                  # (..., M, M)
    return (lq.diagonal(dim1=-2, dim2=-1) - mws_log_marginal(lq, dataset_size=1)).mean(-1)


def static_adversary_loss(logits: torch.Tensor, logits_frozen: torch.Tensor, target: torch.Tensor,
                          kind: str = "topk") -> tuple[torch.Tensor, torch.Tensor]:
    """Keeps the dynamic pseudo-labels out of z_f (a departure from the paper; docs/departures.md).

    An adversary phi_f predicts the clip's per-step DFP labels from z_f alone. ``logits`` (B, T', K)
    come from z_f detached (they train phi_f: ordinary L_DFP), ``logits_frozen`` from z_f through phi_f
    with its weights detached (they train the encoder: the prediction is pushed to the uniform
    distribution over the K labels, as DRNet's scene discriminator is pushed to 1/2). Returns
    (adversary loss, confusion loss). Only label pseudo-labels (``topk``) are supported.
    """
    if kind != "topk":
        raise ValueError(f"the static adversary needs label pseudo-labels (topk), got {kind!r}")
    return dfp_loss(logits, target, kind), -F.log_softmax(logits_frozen, dim=-1).mean()


def critic_fit(model, zf: torch.Tensor, zt: torch.Tensor, pairs: str = "step") -> torch.Tensor:
    """CLUB's likelihood step: -log q(z_t | z_f) on detached joint samples, in float32 (trains q only).

    zf (M, Df), zt (M, T, Dt); ``pairs`` as in ``club_mi``."""
    with torch.autocast(zf.device.type, enabled=False):
        y = zt.detach().float()
        mu, logvar = _critic_q(model, zf.detach().float(), pairs)
        return -log_normal(y.mean(1) if pairs == "sequence" else y, mu, logvar).sum(-1).mean()


def _critic_q(model, zf: torch.Tensor, pairs: str, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z_t | z_f)'s mean and log-variance, (M, Dt), or (M, 1, Dt) to broadcast over the steps."""
    mu, logvar = model.critic_q(zf, frozen=frozen)
    return (mu[:, None], logvar[:, None]) if pairs == "step" else (mu, logvar)


def club_mi(model, zf: torch.Tensor, zt: torch.Tensor, pairs: str = "step", grad: str = "zt") -> torch.Tensor:
    """L_MI by CLUB (Cheng et al., ICML 2020): I(z_f; z_t) <= E_p(zf,zt)[log q(z_t|z_f)] - E_p(zf)p(zt)[log q(z_t|z_f)].

    Why not eq. 8 here: with sharp posteriors each MWS log-marginal is dominated by the sample's own
    clip, so at batch 16 the estimate sits near log(N M) whatever z_f and z_t share and its gradient
    cannot remove what they share (``batch_identifiability``). CLUB's bound needs only a regressor of
    z_t on z_f (``model.critic_q``, fitted by ``critic_fit``), and it falls to 0 once z_f no longer
    predicts z_t.

    The bound is computed with q's weights frozen, its gradient reaching the latents ``grad`` names
    (``zt``: z_1:T gives up what z_f predicts, the speaker on audio; ``zf``: z_f gives up what predicts
    z_t, the action on video; ``both``). It is computed in float32 whatever the autocast around it:
    its log-densities divide by exp(log-variance), which bfloat16 rounds to 8 bits. The negative
    term averages log q over all M x M pairs of the minibatch. ``pairs``: ``step`` pairs z_f with
    every z_t (mean over t), ``sequence`` with the time-mean of z_1:T. zf (M, Df), zt (M, T, Dt).
    """
    with torch.autocast(zf.device.type, enabled=False):
        zf, zt = zf.float(), zt.float()
        y = zt.mean(1) if pairs == "sequence" else zt                       # (M, Dt) or (M, T, Dt)
        xf = zf if grad in ("zf", "both") else zf.detach()
        yt = y if grad in ("zt", "both") else y.detach()
        mu, logvar = _critic_q(model, xf, pairs, frozen=True)
        positive = log_normal(yt, mu, logvar).sum(-1)                       # (M,) or (M, T): log q(y_i | x_i)
        # log q(y_j | x_i) for all i, j: (M_i, M_j, ...)
        negative = log_normal(yt.unsqueeze(0), mu.unsqueeze(1), logvar.unsqueeze(1)).sum(-1).mean(1)
        return (positive - negative).mean()


MIEstimator = Literal["mws", "club"]
SCCOn = Literal["samples", "means"]
Recon = Literal["mse", "bce"]
DFPKind = Literal["topk", "binary", "regression", "clip"]
MIReduce = Literal["sum", "mean"]
MIPairs = Literal["step", "sequence"]
MIGrad = Literal["zt", "zf", "both"]


@dataclass
class LossOptions:
    """Everything eq. 9 needs besides the model and the batch (``train.TrainConfig`` is built on it)."""

    lambda_scc: float = 1000.0        # λ1, App. D
    lambda_dfp: float = 100.0         # λ2
    lambda_mi: float = 1.0            # λ3
    lambda_adv: float = 0.0           # static adversary (a departure; 0 = the paper)
    margin: float = 1.0               # m in eq. 6
    scc_on: SCCOn = "samples"         # eq. 6 between posterior samples of z_f (literal) or means
    recon: Recon = "mse"              # -log p(x|z): Gaussian (squared error) or Bernoulli
    recon_weight: float = 1.0         # factor on -log p(x|z): the Gaussian's variance is 0.5 / w
    dfp_kind: DFPKind = "topk"        # topk (cross-entropy), binary, regression (MSE)
    dfp_offset: int = 1               # the DFP labels cover frames dfp_offset..T-1 (flow starts at the 2nd)
    mi_estimator: MIEstimator = "mws"  # eq. 7-8 (the paper) or CLUB (club_mi)
    mi_reduce: MIReduce = "sum"       # mws: eq. 7 summed over t (the paper) or averaged (C-DSVAE's code)
    mi_pairs: MIPairs = "step"        # club: (z_f, z_t) per step, or (z_f, time-mean of z_1:T)
    mi_grad: MIGrad = "zt"            # club: which latent the bound's gradient reaches

    def __post_init__(self):
        check_literals(self)

    @classmethod
    def of(cls, cfg) -> "LossOptions":
        """The loss options among a config object's (or dict's) fields, by name."""
        get = cfg.get if isinstance(cfg, dict) else lambda k, d: getattr(cfg, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in fields(cls)})


def s3vae_loss(model, x: torch.Tensor, dfp_target: torch.Tensor | None, opts: LossOptions, dataset_size: int,
               fit_critic=None) -> tuple[torch.Tensor, dict]:
    """eq. 9 for one minibatch x (B, T, C, H, W). A λ of 0 switches its term off (and skips its cost).

    ``dataset_size`` is eq. 8's N. ``opts.scc_on``: the noise of a 256-d sample swamps eq. 6's margin
    of 1, so the quick configs compare posterior means. ``opts.lambda_adv`` > 0 adds the static
    adversary (``static_adversary_loss``) on the DFP labels. ``fit_critic(zf, zt)``, where given, fits
    CLUB's q on the detached latents and returns its last -log q (``train.CriticFitter``); without it
    that term joins the total. Also returns the detached terms, with ``mi_fit`` (the critic's fit) and
    ``mi_grad``: the norm of L_MI's gradient at the latent samples (a saturated estimator shows as ~0).
    """
    o = opts
    shuffle = None
    if o.lambda_scc > 0:  # L_SCC's positive: the same clip with its frames shuffled in time
        B, T = x.shape[:2]
        shuffle = torch.argsort(torch.rand(B, T, device=x.device), dim=1)      # (B, T)
    out = model(x, shuffle=shuffle)
    rec, kl_f, kl_t = vae_loss(x, out["x_hat"], out["zf_mu"], out["zf_logvar"], out["zt_mu"],
                               out["zt_logvar"], out["pz_mu"], out["pz_logvar"], o.recon)
    total = o.recon_weight * rec + kl_f + kl_t
    parts = {"recon": rec.detach(), "kl_f": kl_f.detach(), "kl_t": kl_t.detach()}
    if o.lambda_scc > 0:
        mu_pos, logvar_pos = out["zf_pos_mu"], out["zf_pos_logvar"]
        if o.scc_on == "means":
            zf, zf_pos = out["zf_mu"], mu_pos
        else:
            zf, zf_pos = out["zf"], reparameterize(mu_pos, logvar_pos)
        scc = scc_loss(zf, zf_pos, zf.roll(1, dims=0), o.margin)                 # negative: another clip
        total = total + o.lambda_scc * scc
        parts["scc"] = scc.detach()
    if o.lambda_dfp > 0:
        if dfp_target is None:
            raise ValueError("lambda_dfp > 0 but the batch carries no DFP labels")
        dfp = dfp_loss(out["dfp_logits"][:, o.dfp_offset:], dfp_target, o.dfp_kind)
        total = total + o.lambda_dfp * dfp
        parts["dfp"] = dfp.detach()
    if o.lambda_adv > 0:
        if dfp_target is None:
            raise ValueError("lambda_adv > 0 but the batch carries no DFP labels")
        adv, conf = static_adversary_loss(model.static_adversary(out["zf_mu"].detach())[:, o.dfp_offset:],
                                          model.static_adversary(out["zf_mu"], frozen=True)[:, o.dfp_offset:],
                                          dfp_target, o.dfp_kind)
        total = total + adv + o.lambda_adv * conf
        parts["adv"], parts["conf"] = adv.detach(), conf.detach()
    if o.lambda_mi > 0:
        if o.mi_estimator == "club":
            if fit_critic is None:  # q fitted by one step of the model's own optimiser (its inputs detached)
                fit = critic_fit(model, out["zf"], out["zt"], o.mi_pairs)
                total = total + fit
            else:  # q on its own optimiser, fitted to this batch before the bound reads it
                fit = fit_critic(out["zf"].detach(), out["zt"].detach())
            mi = club_mi(model, out["zf"], out["zt"], o.mi_pairs, o.mi_grad)
            parts["mi_fit"] = fit.detach()
        else:
            mi = mi_loss(out["zf"], out["zf_mu"], out["zf_logvar"], out["zt"], out["zt_mu"], out["zt_logvar"],
                         dataset_size, o.mi_reduce)
        total = total + o.lambda_mi * mi
        parts["mi"] = mi.detach()
        if torch.is_grad_enabled() and mi.requires_grad:
            zs = [z for z in (out["zf"], out["zt"]) if z.requires_grad]
            g = torch.autograd.grad(mi, zs, retain_graph=True, allow_unused=True)
            parts["mi_grad"] = torch.sqrt(sum((gi.float() ** 2).sum() for gi in g if gi is not None)).detach()
    parts["loss"] = total.detach()
    return total, parts
