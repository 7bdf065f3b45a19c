"""The S3VAE sequential VAE (Zhu et al., CVPR 2020, §3 and Appendix D, Table 4).

Generative model (eq. 1-2):
    p(z_f) = N(0, I)
    p(z_t | z_<t) = N(mu_t, diag(sigma_t^2)),  [mu_t, sigma_t] = LSTM_prior(z_<t)
    p(x_t | z_f, z_t) = decoder(z_f, z_t)
Inference model (eq. 3-4):
    q(z_f | x_1:T):  frame encoder -> LSTM_f(256) over the frame features -> its last output
    q(z_t | x_<=t):  LSTM_t(256) over LSTM_f's outputs (both unidirectional, so causal in t)
  ``static_lstm="bidirectional"`` (App. D only says "an LSTM"; C-DSVAE and DSVAE read z_f from a
  BiLSTM): LSTM_f runs both ways, z_f reads [forward last, backward first], and LSTM_t reads only the
  forward half, so q(z_t | x_<=t) stays causal. The configs use it (docs/departures.md has what it
  changed on FSDD).
  ``zt_input="lstm_f+frames"``: LSTM_t also reads each frame's features (a skip past LSTM_f; still
  causal), so that per-frame detail reaches z_t through one LSTM instead of two.
  ``zt_input="head+frames"``: q(z_t)'s Gaussian head reads [LSTM_t's output, the frame's features] (a
  skip past both LSTMs; still causal), so that per-frame detail reaches z_t without passing through an
  LSTM (docs/departures.md has what it changed on SMMNIST).
Dynamic factor prediction head phi_a (§4.2): two FC layers on z_t.

Audio (§5.2): the same model with an MLP frame encoder/decoder for D-dimensional feature frames
(80-d log-mel) in place of the conv stack (``modality="audio"``).

DSVAE (Li & Mandt 2018), the paper's main baseline, in the same framework (``posterior=``):
    ``dsvae-factorised``: q(z_f | x_1:T) from a BiLSTM, q(z_t | x_t) from each frame alone (an MLP);
    ``dsvae-full``:       q(z_f | x_1:T) from a BiLSTM, q(z_t | x_1:T, z_f) from a BiLSTM over
                          [frame features, z_f] followed by a forward RNN;
both with the same LSTM prior p(z_t | z_<t) and decoder, trained with the ELBO only (λ's = 0).

Shapes: B batch, T frames, C/H/W image (D audio features), F frame-feature size, Df/Dt latent sizes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3vae.utils import check_literals

Modality = Literal["video", "audio"]
Posterior = Literal["s3vae", "dsvae-factorised", "dsvae-full"]
StaticLSTM = Literal["forward", "bidirectional"]
ZtInput = Literal["lstm_f", "lstm_f+frames", "head+frames"]
Decoder = Literal["upsample", "transposed"]
MICritic = Literal["none", "club"]
POSTERIORS, STATIC_LSTMS, ZT_INPUTS, DECODERS, MI_CRITICS = (
    get_args(t) for t in (Posterior, StaticLSTM, ZtInput, Decoder, MICritic))


@dataclass
class S3VAEConfig:
    modality: Modality = "video"            # "video" (conv encoder/decoder) or "audio" (MLP on feature frames)
    posterior: Posterior = "s3vae"          # "s3vae" | "dsvae-factorised" | "dsvae-full" (module docstring)
    static_lstm: StaticLSTM = "forward"     # s3vae: LSTM_f "forward" or "bidirectional" (module docstring)
    audio_features: int = 80                # audio: features per frame, D (80 log-mel bins)
    audio_width: int = 256                  # audio: width of the MLP frame encoder and decoder
    channels: int = 3                       # d_img: 1 for SMMNIST, 3 for Sprites/MUG
    image_size: int = 64
    enc_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])       # Table 4
    dec_widths: list[int] = field(default_factory=lambda: [512, 256, 128, 128, 64])  # Table 4
    decoder: Decoder = "upsample"           # Table 4's "upsample" + 3x3 conv, or DCGAN-style "transposed" conv
    feat_dim: int = 128                     # frame feature size (Table 4 encoder output)
    hidden: int = 256                       # LSTM_f, LSTM_t and LSTM_prior hidden size (App. D)
    z_f: int = 256                          # d_zf (App. D: 256 SMMNIST/Sprites, 8 MUG)
    z_t: int = 32                           # d_zt (App. D: 32 SMMNIST/Sprites, 128 MUG)
    dfp_out: int = 9                        # phi_a outputs: G*G flow cells, 3 landmark gaps, ...
    dfp_hidden: int = 256
    adv_steps: int = 0                      # static adversary phi_f: frames it predicts labels for (0 = none)
    zt_input: ZtInput = "lstm_f"            # s3vae: what q(z_t) reads besides LSTM_f (module docstring)
    logvar_init: float = 0.0                # initial bias of q(z_f)'s and q(z_t)'s log-variance (0: PyTorch's init)
    mi_critic: MICritic = "none"            # "club": the variational q(z_t | z_f) of L_MI's CLUB estimate (losses.py)
    critic_hidden: int = 256

    @classmethod
    def from_saved(cls, d: dict) -> "S3VAEConfig":
        """A config a checkpoint holds; audio models written before ``audio_width`` read it from dec_widths[0]."""
        if d.get("modality") == "audio" and "audio_width" not in d:
            d = {**d, "audio_width": d["dec_widths"][0]}
        return cls(**d)

    def __post_init__(self):
        check_literals(self)
        if self.modality == "audio":
            return
        n = math.log2(self.image_size / 4) if self.image_size >= 4 else -1.0
        if n < 1 or n != int(n):
            raise ValueError(f"image_size must be 4 * 2^k (8, 16, 32, 64, 128, ...): the encoder halves it to 4x4 "
                             f"and the decoder doubles it back; got {self.image_size}")
        n = int(n)
        if len(self.enc_widths) != n:
            raise ValueError(f"image_size {self.image_size} needs log2({self.image_size}/4) = {n} stride-2 encoder "
                             f"layers to reach 4x4, so {n} enc_widths; got {len(self.enc_widths)} "
                             f"(enc_widths={self.enc_widths})")
        # upsample: every width after the first doubles the size; transposed: the output layer does too
        need = n + (1 if self.decoder == "upsample" else 0)
        if len(self.dec_widths) != need:
            after = " after the first" if self.decoder == "upsample" else ""
            raise ValueError(f"image_size {self.image_size} needs {n} upsampling layers from 4x4; the "
                             f"{self.decoder!r} decoder has one per width{after}, so {need} dec_widths; got "
                             f"{len(self.dec_widths)} (dec_widths={self.dec_widths})")


class FrameEncoder(nn.Module):
    """Table 4 encoder: [4x4 conv s2, BN, lReLU(0.2)] x n, then 4x4 conv s1 -> feat_dim, BN, Tanh."""

    def __init__(self, cfg: S3VAEConfig):
        super().__init__()
        layers, c_in = [], cfg.channels
        for w in cfg.enc_widths:
            layers += [nn.Conv2d(c_in, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True)]
            c_in = w
        layers += [nn.Conv2d(c_in, cfg.feat_dim, 4, 1, 0), nn.BatchNorm2d(cfg.feat_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, F)
        return self.net(x).flatten(1)


# For the two output phases a of an axis, which of the 3 taps of a 3x3 kernel fall on each of the 2 source
# pixels once the input has been upsampled by nearest neighbour: row a of _PHASE_TAPS maps (k) -> (tap).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],   # even outputs: x[p-1] <- w0, x[p] <- w1 + w2
                            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # odd outputs:  x[p] <- w0 + w1, x[p+1] <- w2


class UpsampleConv2d(nn.Conv2d):
    """``conv3x3(upsample_nearest_2x(x))`` of Table 4's decoder, computed without the upsampled tensor.

    After a nearest 2x upsampling, each of the four output phases (row parity a, column parity b) of a
    3x3 convolution only ever reads a 2x2 window of the *low-resolution* input, with taps that are sums
    of the 3x3 kernel's taps. So one 2x2 convolution at low resolution with 4*C_out kernels, followed
    by interleaving the phases, gives the same output with 16 instead of 36 multiply-adds per input
    pixel and channel pair (2.25x fewer), and no 4x larger intermediate. Parameters (and state-dict
    keys) are those of the plain ``nn.Conv2d(c_in, c_out, 3, 1, 1)``; equality is tested.
    The phase trick pays off for wide layers (Table 4's; benchmarks/README.md); for narrow ones the
    interleaving copy costs more than it saves, so they upsample and convolve.
    """

    FUSE_MIN = 64 * 64  # c_in * c_out from which the phase form is used (measured on CPU, 2 threads)

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, 1, 1)
        self.fused = c_in * c_out >= self.FUSE_MIN

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Ci, P, Q) -> (N, Co, 2P, 2Q)
        if not self.fused:
            return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))
        N, _, P, Q = x.shape
        R = _PHASE_TAPS.to(self.weight)
        k = torch.einsum("atk,oikl,bsl->aboits", R, self.weight, R)      # (2, 2, Co, Ci, 2, 2)
        Co = self.out_channels
        y = F.conv2d(x, k.reshape(4 * Co, -1, 2, 2), padding=1)        # (N, 4*Co, P+1, Q+1)
        y = y.view(N, 2, 2, Co, P + 1, Q + 1)
        phases = [[y[:, a, b, :, a:a + P, b:b + Q] for b in (0, 1)] for a in (0, 1)]
        out = torch.stack([torch.stack(row, dim=-1) for row in phases], dim=-3)  # (N, Co, P, 2, Q, 2)
        return out.reshape(N, Co, 2 * P, 2 * Q) + self.bias[:, None, None]


class Project4x4(nn.ConvTranspose2d):
    """Table 4's first decoder layer: a 4x4 transposed conv of z as a 1x1 map, which is a linear map to a
    4x4 map; computed as one matmul (the convolution path is several times slower on CPU). Parameters and
    state-dict keys are the ``nn.ConvTranspose2d``'s; equality is tested."""

    def __init__(self, d_in: int, c_out: int):
        super().__init__(d_in, c_out, 4, 1, 0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, D, 1, 1) -> (N, C, 4, 4)
        w = self.weight.flatten(1)                                    # (D, C*16), column c*16 + 4i + j
        return torch.addmm(self.bias.repeat_interleave(16), z.flatten(1), w).view(-1, self.out_channels, 4, 4)


class FrameDecoder(nn.Module):
    """Table 4 decoder: z as a 1x1 map -> 4x4 convT -> [upsample, 3x3 conv, BN, ReLU] x n -> 1x1 conv, sigmoid.

    ``decoder="transposed"`` (DCGAN, as DSVAE's code): [4x4 convT stride 2, BN, ReLU] x n, then a 4x4 convT
    stride 2 to the image: the same resolution path, faster on CPU (no 3x3 conv at full resolution;
    docs/departures.md)."""

    def __init__(self, cfg: S3VAEConfig):
        super().__init__()
        w0 = cfg.dec_widths[0]
        layers = [Project4x4(cfg.z_f + cfg.z_t, w0), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)]
        c_in = w0
        for w in cfg.dec_widths[1:]:
            up = UpsampleConv2d(c_in, w) if cfg.decoder == "upsample" else nn.ConvTranspose2d(c_in, w, 4, 2, 1)
            layers += [up, nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c_in = w
        if cfg.decoder == "upsample":
            layers += [nn.Conv2d(c_in, cfg.channels, 1, 1, 0), nn.Sigmoid()]
        else:
            layers += [nn.ConvTranspose2d(c_in, cfg.channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, Df+Dt) -> (N, C, H, W)
        return self.net(z[:, :, None, None])


class AudioFrameEncoder(nn.Module):
    """Feature frame (D,) -> (F,): two FC layers, as the conv stack's role for spectrogram frames."""

    def __init__(self, cfg: S3VAEConfig):
        super().__init__()
        h = cfg.audio_width
        self.net = nn.Sequential(nn.Linear(cfg.audio_features, h), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(h, h), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(h, cfg.feat_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, F)
        return self.net(x)


class AudioFrameDecoder(nn.Module):
    """(z_f, z_t) -> feature frame (D,); linear output: log-mel features are real-valued (Gaussian)."""

    def __init__(self, cfg: S3VAEConfig):
        super().__init__()
        h = cfg.audio_width
        self.net = nn.Sequential(nn.Linear(cfg.z_f + cfg.z_t, h), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(h, h), nn.LeakyReLU(0.2, inplace=True), nn.Linear(h, cfg.audio_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, Df+Dt) -> (N, D)
        return self.net(z)


class GaussianHead(nn.Module):
    """Linear map to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.fc = nn.Linear(d_in, 2 * d_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(h).chunk(2, dim=-1)
        return mu, logvar


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class S3VAE(nn.Module):
    def __init__(self, cfg: S3VAEConfig):
        super().__init__()
        self.cfg = cfg
        audio = cfg.modality == "audio"
        self.encoder = AudioFrameEncoder(cfg) if audio else FrameEncoder(cfg)
        self.decoder = AudioFrameDecoder(cfg) if audio else FrameDecoder(cfg)
        H = cfg.hidden
        if cfg.posterior == "s3vae":
            bi = cfg.static_lstm == "bidirectional"
            self.lstm_f = nn.LSTM(cfg.feat_dim, H, batch_first=True, bidirectional=bi)  # psi_f^Encoder
            self.zf_head = GaussianHead(2 * H if bi else H, cfg.z_f)
            skip = cfg.feat_dim if cfg.zt_input == "lstm_f+frames" else 0
            self.lstm_t = nn.LSTM(H + skip, H, batch_first=True)                      # psi_R^Encoder
            zt_in = H + (cfg.feat_dim if cfg.zt_input == "head+frames" else 0)
        else:  # DSVAE: z_f from a bidirectional LSTM over the frame features
            self.lstm_f = nn.LSTM(cfg.feat_dim, H, batch_first=True, bidirectional=True)
            self.zf_head = GaussianHead(2 * H, cfg.z_f)
            if cfg.posterior == "dsvae-factorised":                                    # q(z_t | x_t)
                self.zt_mlp = nn.Sequential(nn.Linear(cfg.feat_dim, H), nn.LeakyReLU(0.2, inplace=True))
            else:                                                                      # q(z_t | x_1:T, z_f)
                self.lstm_t = nn.LSTM(cfg.feat_dim + cfg.z_f, H, batch_first=True, bidirectional=True)
                self.rnn_t = nn.RNN(2 * H, H, batch_first=True)
            zt_in = H
        self.zt_head = GaussianHead(zt_in, cfg.z_t)
        self.lstm_prior = nn.LSTM(cfg.z_t, H, batch_first=True)                       # phi_R^prior
        self.prior_head = GaussianHead(H, cfg.z_t)
        self.dfp = nn.Sequential(nn.Linear(cfg.z_t, cfg.dfp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.dfp_hidden, cfg.dfp_out))     # phi_a, §4.2
        if cfg.logvar_init:  # a small initial variance: the decoder learns from informative samples
            for head in (self.zf_head, self.zt_head):
                nn.init.constant_(head.fc.bias[head.fc.out_features // 2:], cfg.logvar_init)
        if cfg.adv_steps:  # phi_f: the dynamic labels of every frame from z_f alone (losses.static_adversary_loss)
            self.adversary = nn.Sequential(nn.Linear(cfg.z_f, cfg.dfp_hidden), nn.ReLU(inplace=True),
                                           nn.Linear(cfg.dfp_hidden, cfg.adv_steps * cfg.dfp_out))
        if cfg.mi_critic == "club":  # q_theta(z_t | z_f), fitted by likelihood (losses.club_mi)
            self.critic = nn.Sequential(nn.Linear(cfg.z_f, cfg.critic_hidden), nn.ReLU(inplace=True),
                                        GaussianHead(cfg.critic_hidden, cfg.z_t))

    # --- inference -------------------------------------------------------------------------
    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(B, T, -1)  # (B*T, C, H, W) or (B*T, D) -> (B, T, F)

    def static_posterior(self, feats: torch.Tensor):
        """q(z_f | x_1:T) from frame features (B, T, F); also returns the LSTM_f outputs that the
        dynamic posterior reads: (B, T, hidden) for S3VAE (the forward direction only, so that
        q(z_t | x_<=t) stays causal), (B, T, 2*hidden) for DSVAE."""
        h, _ = self.lstm_f(feats)
        H = self.cfg.hidden
        if not self.lstm_f.bidirectional:
            last = h[:, -1]  # the last step has read the whole sequence
        else:  # BiLSTM: forward direction's last step and backward direction's first step
            last = torch.cat([h[:, -1, :H], h[:, 0, H:]], dim=-1)
        mu, logvar = self.zf_head(last)
        if self.cfg.posterior == "s3vae" and self.lstm_f.bidirectional:
            h = h[..., :H]  # (B, T, 2H) -> (B, T, H): forward half
        return mu, logvar, h

    def dynamic_posterior(self, h: torch.Tensor, feats: torch.Tensor | None = None, zf: torch.Tensor | None = None):
        """q(z_t | ...) for every t: (B, T, Dt) each.

        S3VAE: q(z_t | x_<=t) from LSTM_t over LSTM_f's outputs h (causal: both run forward).
        DSVAE factorised: q(z_t | x_t) from each frame's features; full: q(z_t | x_1:T, z_f).
        """
        if self.cfg.posterior == "s3vae":
            g, _ = self.lstm_t(torch.cat([h, feats], dim=-1) if self.cfg.zt_input == "lstm_f+frames" else h)
            if self.cfg.zt_input == "head+frames":
                g = torch.cat([g, feats], dim=-1)  # (B, T, H + F)
        elif self.cfg.posterior == "dsvae-factorised":
            g = self.zt_mlp(feats)
        else:
            T = feats.shape[1]
            u, _ = self.lstm_t(torch.cat([feats, zf[:, None].expand(-1, T, -1)], dim=-1))  # (B, T, 2H)
            g, _ = self.rnn_t(u)
        return self.zt_head(g)

    def encode(self, x: torch.Tensor, sample_zf: bool = False, shuffle: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """Posterior parameters. ``sample_zf``: also draw z_f (DSVAE-full conditions q(z_t) on that
        draw); otherwise q(z_t) is conditioned on z_f's mean (evaluation). ``shuffle`` (B, T), a frame
        order per clip: also q(z_f) of the reordered clips (L_SCC's positives), as ``zf_pos_mu`` and
        ``zf_pos_logvar``. The frame encoder acts per frame, so their features are the reordered
        features; LSTM_f reads both batches in one call (one pass costs less than two on CPU)."""
        feats = self.frame_features(x)
        out = {"feats": feats}
        if shuffle is None:
            zf_mu, zf_logvar, h = self.static_posterior(feats)
        else:
            B = feats.shape[0]
            reordered = feats.gather(1, shuffle[..., None].expand_as(feats))
            mu, logvar, h = self.static_posterior(torch.cat([feats, reordered]))
            zf_mu, zf_logvar, h = mu[:B], logvar[:B], h[:B]
            out["zf_pos_mu"], out["zf_pos_logvar"] = mu[B:], logvar[B:]
        out["zf_mu"], out["zf_logvar"] = zf_mu, zf_logvar
        zf = reparameterize(zf_mu, zf_logvar) if sample_zf else zf_mu
        if sample_zf:
            out["zf"] = zf
        out["zt_mu"], out["zt_logvar"] = self.dynamic_posterior(h, feats, zf)
        return out

    # --- prior ------------------------------------------------------------------------------
    def prior(self, zt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_t | z_<t) for every t given a whole sequence z_1:T (teacher forcing): (B, T, Dt) each."""
        z_prev = torch.cat([torch.zeros_like(zt[:, :1]), zt[:, :-1]], dim=1)  # z_0 = 0
        g, _ = self.lstm_prior(z_prev)
        return self.prior_head(g)

    @torch.no_grad()
    def sample_zt(self, batch: int, T: int, device=None) -> torch.Tensor:
        """z_1:T ~ p(z_1:T), one step at a time: (B, T, Dt)."""
        z = torch.zeros(batch, 1, self.cfg.z_t, device=device)
        state, out = None, []
        for _ in range(T):
            g, state = self.lstm_prior(z, state)
            mu, logvar = self.prior_head(g)
            z = reparameterize(mu, logvar)
            out.append(z)
        return torch.cat(out, dim=1)

    # --- generation -------------------------------------------------------------------------
    def decode(self, zf: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        """x_t = Decoder(z_f, z_t): zf (B, Df), zt (B, T, Dt) -> (B, T, C, H, W) (audio: (B, T, D))."""
        B, T = zt.shape[:2]
        z = torch.cat([zf[:, None].expand(-1, T, -1), zt], dim=-1).flatten(0, 1)  # (B*T, Df+Dt)
        return self.decoder(z).view(B, T, *self.decoder_shape)

    @property
    def decoder_shape(self) -> tuple[int, ...]:
        if self.cfg.modality == "audio":
            return (self.cfg.audio_features,)
        return (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)

    def forward(self, x: torch.Tensor, shuffle: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Everything the losses of eq. 5-9 need, for clips x (B, T, C, H, W) in [0, 1]; ``shuffle``: as in
        ``encode``, for L_SCC."""
        out = self.encode(x, sample_zf=True, shuffle=shuffle)
        out["zt"] = reparameterize(out["zt_mu"], out["zt_logvar"])
        out["pz_mu"], out["pz_logvar"] = self.prior(out["zt"])
        out["x_hat"] = self.decode(out["zf"], out["zt"])
        out["dfp_logits"] = self.dfp(out["zt"])  # (B, T, dfp_out)
        return out

    def static_adversary(self, zf: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """phi_f(z_f): (B, Df) -> logits (B, adv_steps, dfp_out). ``frozen``: gradients reach z_f only."""
        if frozen:
            params = {k: v.detach() for k, v in self.adversary.named_parameters()}
            y = torch.func.functional_call(self.adversary, params, (zf,))
        else:
            y = self.adversary(zf)
        return y.view(zf.shape[0], self.cfg.adv_steps, self.cfg.dfp_out)

    def critic_q(self, zf: torch.Tensor, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """q_theta(z_t | z_f): (B, Df) -> mean and log-variance (B, Dt). ``frozen``: gradients reach z_f only."""
        if frozen:
            params = {k: v.detach() for k, v in self.critic.named_parameters()}
            return torch.func.functional_call(self.critic, params, (zf,))
        return self.critic(zf)

    def config_dict(self) -> dict:
        return asdict(self.cfg)
