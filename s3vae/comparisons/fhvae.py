"""FHVAE (Hsu, Zhang & Glass, NeurIPS 2017): the factorised hierarchical VAE of S3VAE's Table 3.

Every segment x^(i,n) (n-th segment of sequence i, T feature frames) has two latents:

* z1 (segment level, "dynamic"): prior N(0, I), posterior q(z1 | x, z2) from an LSTM over [x_t, z2];
* z2 (sequence level, "static"): prior N(mu2_i, I), posterior q(z2 | x) from an LSTM over x, where mu2_i
  is a per-sequence embedding with prior N(0, I): a table looked up by sequence index in training.

Loss per segment (the discriminative segment variational lower bound, to be minimised)::

    -log p(x | z1, z2) + KL(q(z1) || N(0, I)) + KL(q(z2) || N(mu2_i, I)) - log p(mu2_i) / N_i
        - alpha * log p(i | z2),      p(i | z2) = softmax_j( log N(z2; mu2_j, I) )  over training sequences

p(x | z1, z2): an LSTM over [z1, z2] (repeated over the T steps) with a Gaussian output of learned
diagonal variance per frame. For an unseen sequence, mu2 is inferred in closed form from its segments:
the MAP estimate sum_n E_q[z2^(n)] / (N + 1) (``infer_mu2``); the speaker embedding of Table 3 is that
estimate (the verification code averages z2's posterior means, the same direction: cosine scoring
ignores the scale). ``encode`` returns the S3VAE keys (``zf_mu`` = z2, ``zt_mu`` = z1 per segment) so
that ``s3vae.evaluation.verification`` scores both sides.

Choices the FHVAE paper leaves open or that differ here: one LSTM layer per network (the paper uses two,
256 units), z1 and z2 of ``z_dim`` each (Table 3's FHVAE row is 16-d), alpha 10 (the paper's), Adam 1e-3,
plain random minibatches of segments (the paper's sequence-to-sequence batching is optional; with ~1,200
FSDD utterances the softmax over all training sequences is cheap).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s3vae.data import ClipDataset
from s3vae.engine import At, fit_system, prelude
from s3vae.model import reparameterize
from s3vae.utils import adam, load_trained, seed_everything

LOG_2PI = math.log(2 * math.pi)


@dataclass
class FHVAEConfig:
    audio_features: int = 80          # feature frame size (80-d log-mel)
    hidden: int = 256          # LSTM units
    z_dim: int = 16            # z1 and z2 each
    n_sequences: int = 1       # rows of the mu2 table: training sequences (set from the data)


@dataclass
class FHVAETrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    alpha: float = 10.0        # weight of the discriminative term log p(i | z2)
    seed: int = 1
    device: str = "auto"
    threads: int = 0


class Gaussian(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.mu, self.logvar = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)

    def forward(self, h):
        return self.mu(h), self.logvar(h)


def log_normal(x, mu, logvar):
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 / logvar.exp())


class FHVAE(nn.Module):
    def __init__(self, cfg: FHVAEConfig):
        super().__init__()
        self.cfg = cfg
        H, Z = cfg.hidden, cfg.z_dim
        self.enc_z2 = nn.LSTM(cfg.audio_features, H, batch_first=True)
        self.q_z2 = Gaussian(H, Z)
        self.enc_z1 = nn.LSTM(cfg.audio_features + Z, H, batch_first=True)
        self.q_z1 = Gaussian(H, Z)
        self.dec = nn.LSTM(2 * Z, H, batch_first=True)
        self.p_x = Gaussian(H, cfg.audio_features)
        self.mu2 = nn.Embedding(cfg.n_sequences, Z)          # per-sequence mean of z2 (training sequences)
        nn.init.normal_(self.mu2.weight)

    def encode(self, x: torch.Tensor, sample: bool = False) -> dict[str, torch.Tensor]:
        """x (B, T, D) -> posteriors; ``zf_mu``/``zt_mu`` name z2/z1 as S3VAE's static/dynamic sides."""
        T = x.shape[1]
        h, _ = self.enc_z2(x)
        z2_mu, z2_logvar = self.q_z2(h[:, -1])
        z2 = reparameterize(z2_mu, z2_logvar) if sample else z2_mu
        h, _ = self.enc_z1(torch.cat([x, z2[:, None].expand(-1, T, -1)], -1))
        z1_mu, z1_logvar = self.q_z1(h[:, -1])
        return {"z2_mu": z2_mu, "z2_logvar": z2_logvar, "z2": z2, "z1_mu": z1_mu, "z1_logvar": z1_logvar,
                "zf_mu": z2_mu, "zt_mu": z1_mu[:, None]}

    def decode(self, z1: torch.Tensor, z2: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x | z1, z2): mean and log-variance (B, T, D)."""
        h, _ = self.dec(torch.cat([z1, z2], -1)[:, None].expand(-1, T, -1))
        return self.p_x(h)

    @staticmethod
    def infer_mu2(z2_means: torch.Tensor) -> torch.Tensor:
        """MAP mu2 of one unseen sequence from its N segments' z2 posterior means (N, Z)."""
        return z2_means.sum(0) / (len(z2_means) + 1)

    def loss(self, x: torch.Tensor, seq: torch.Tensor, n_segments: torch.Tensor, alpha: float):
        """The discriminative segment lower bound (module docstring), averaged over the batch.
        ``seq``: sequence index of each segment (B,), ``n_segments``: its sequence's segment count (B,)."""
        out = self.encode(x, sample=True)
        z1 = reparameterize(out["z1_mu"], out["z1_logvar"])
        x_mu, x_logvar = self.decode(z1, out["z2"], x.shape[1])
        rec = -log_normal(x, x_mu, x_logvar).sum((1, 2))
        kl1 = 0.5 * (out["z1_mu"] ** 2 + out["z1_logvar"].exp() - 1 - out["z1_logvar"]).sum(-1)
        mu2 = self.mu2(seq)
        kl2 = 0.5 * ((out["z2_mu"] - mu2) ** 2 + out["z2_logvar"].exp() - 1 - out["z2_logvar"]).sum(-1)
        log_p_mu2 = log_normal(mu2, torch.zeros_like(mu2), torch.zeros_like(mu2)).sum(-1) / n_segments
        # log p(i | z2): z2 against every training sequence's mu2
        logits = -0.5 * torch.cdist(out["z2"], self.mu2.weight) ** 2                  # (B, n_sequences)
        disc = -F.cross_entropy(logits, seq, reduction="none")
        total = (rec + kl1 + kl2 - log_p_mu2 - alpha * disc).mean()
        parts = {"loss": total, "recon": rec.mean(), "kl_z1": kl1.mean(), "kl_z2": kl2.mean(), "log_p_i": disc.mean()}
        return total, {k: v.item() for k, v in parts.items()}


def _sequence_index(utterances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of every segment's sequence in the mu2 table, and each segment's sequence length."""
    ids, seq, counts = np.unique(utterances, return_inverse=True, return_counts=True)
    return seq.ravel(), counts[seq.ravel()]


def train(clip_shards: list[str], out: str | Path, ckpt_dir: str | Path, cfg: FHVAEConfig,
          tcfg: FHVAETrainConfig, log=print) -> dict:
    """Train on audio segment shards (``/labels/utterance`` names the sequence; ``engine.fit_system``:
    resumable mid-epoch, a stale checkpoint retrains)."""
    dev = prelude(tcfg.threads, tcfg.device)
    data = ClipDataset(clip_shards, preload=True)
    seq, n_seg = _sequence_index(data.arrays("labels/utterance"))
    cfg = FHVAEConfig(**{**asdict(cfg), "n_sequences": int(seq.max()) + 1})
    seed_everything(tcfg.seed)
    model = FHVAE(cfg).to(dev)
    opt = adam(model.parameters(), lr=tcfg.lr)
    seq_t, n_seg_t = torch.as_tensor(seq), torch.as_tensor(n_seg, dtype=torch.float32)

    def step(b: dict, at: At) -> dict:
        idx = torch.as_tensor(at.indices)
        loss, parts = model.loss(b["frames"].to(dev), seq_t[idx].to(dev), n_seg_t[idx].to(dev), tcfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return parts

    return fit_system("fhvae", data, model, {"opt": opt}, step, out, ckpt_dir, cfg, tcfg, clip_shards, dev, log)


def load(path, device="cpu") -> FHVAE:
    return load_trained(path, FHVAE, FHVAEConfig, device)
