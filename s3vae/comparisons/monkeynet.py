"""MonkeyNet (Siarohin, Lathuilière, Tulyakov, Ricci & Sebe, CVPR 2019, "Animating Arbitrary Objects via
Deep Motion Transfer"), the deformation-based motion-transfer system of S3VAE's Fig. 4.

An object is described by K keypoints learnt without supervision; a frame is animated by moving the
source frame's keypoints the way the driving video's keypoints move. Three networks:

* **keypoint detector** Δ: a U-Net (hourglass) maps a frame to K heatmaps; a spatial softmax makes each a
  distribution over pixel positions whose mean is the keypoint h_k (x, y in [-1, 1], ``F.grid_sample``'s
  frame) and whose covariance Σ_k shapes the Gaussian G_k(p) = exp(-½ (p - h_k)ᵀ Σ_k⁻¹ (p - h_k)) that
  stands for the keypoint downstream;
* **dense motion network** M: predicts the backward flow F from the driving frame D to the source frame
  S (for every pixel z of D, where to read S). Keypoint k moves its neighbourhood by the translation
  h_k^S - h_k^D; part 0 is the background, which does not move. An hourglass reads the Gaussian
  differences G(h^D) - G(h^S) and the source deformed by each part's translation, and outputs a softmax
  mask over the K + 1 parts and a residual flow: F(z) = z + Σ_k M_k(z) (h_k^S - h_k^D) + F_res(z);
* **generator** G: an encoder of the source frame whose feature maps (and the frame itself) are
  deformed by F (``F.grid_sample``) and decoded, with the Gaussian differences beside every skip
  connection, into the driving frame.

Training reconstructs a driving frame from a source frame of the same clip, the keypoints of both from
Δ, so the keypoints are learnt through the reconstruction alone. Test time (``animate``): MonkeyNet's
*relative* motion transfer: the source frame S keeps its keypoints and moves them as the driving video
moves its own from its first frame, h(t) = h^S + (h^D(t) - h^D(1)), Σ(t) = Σ^D(t) Σ^D(1)⁻¹ Σ^S.

Choices where MonkeyNet's paper is silent, and where we depart from it:

* K = 10 keypoints and softmax temperature 0.1 (the official configurations); the covariance is read from
  the heatmap as its second moment plus 1e-3·I (``cov_eps``: a standard deviation of half a pixel at
  32x32) so that its inverse exists; the quadratic form of a transferred Σ(t), which need not be
  symmetric positive definite, is clamped at 0 before the exponential;
* every U-Net: per level a 3x3 conv, batch norm, ReLU and 2x average pooling down, 2x nearest upsampling,
  3x3 conv, batch norm, ReLU up, each up-level concatenated with the skip of its resolution (the frame
  itself at full resolution), widths per level from the config (``kp_widths``, ``motion_widths``,
  ``gen_widths``); no refinement blocks after the generator's decoder;
* the dense motion network works at the frame's resolution (the official code halves 128/256 frames; at
  32x32 half would be 16x16); its last layer starts at zero weights and a bias of 2 for the background
  part (the official initialisation): F starts without residual, leaning to the background's identity;
* **loss: L1 between the generated and the real driving frame, no discriminator**. MonkeyNet trains with an
  LSGAN and a feature-matching reconstruction loss in the discriminator's layers; on the CPU budget we
  keep the reconstruction and make it in pixel space (so its pictures are blurrier than MonkeyNet's);
* training pairs: per epoch, one (source, driving) pair of frames drawn uniformly from every clip (the two
  may coincide); Adam with betas (0.5, 0.999) (the official ones); batch norm in eval mode at test time;
* relative transfer takes the driving video's first frame as its reference (no "best frame" search) and
  does not rescale the motion to the source's size; grid sampling pads with zeros (the datasets'
  backgrounds are black).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3vae.data import ClipDataset
from s3vae.engine import At, fit_system, prelude
from s3vae.utils import adam, load_trained, seed_everything


@dataclass
class MonkeyNetConfig:
    channels: int = 3
    image_size: int = 64
    keypoints: int = 10                   # K
    temperature: float = 0.1              # of the heatmaps' spatial softmax
    cov_eps: float = 1e-3                 # added to every keypoint covariance (coordinates in [-1, 1])
    kp_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])      # U-Net levels of Δ
    motion_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # of M
    gen_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])     # of G's encoder/decoder

    def __post_init__(self):
        for name in ("kp_widths", "motion_widths", "gen_widths"):
            if self.image_size % 2 ** len(getattr(self, name)):
                raise ValueError(f"image_size {self.image_size} cannot be halved {len(getattr(self, name))} "
                                 f"times ({name}={getattr(self, name)})")


@dataclass
class MonkeyNetTrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    seed: int = 1
    device: str = "auto"
    threads: int = 0
    preload: bool = True


class Keypoints(NamedTuple):
    mean: torch.Tensor    # (N, K, 2): x, y in [-1, 1]
    cov: torch.Tensor     # (N, K, 2, 2)


def coordinate_grid(h: int, w: int, device=None) -> torch.Tensor:
    """(H, W, 2): the (x, y) of every pixel centre in [-1, 1], as ``F.grid_sample(align_corners=False)`` reads."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def gaussians(kp: Keypoints, h: int, w: int) -> torch.Tensor:
    """(N, K, H, W): G_k(p) = exp(-½ (p - h_k)ᵀ Σ_k⁻¹ (p - h_k)) of every keypoint on an H x W grid."""
    d = coordinate_grid(h, w, kp.mean.device)[None, None] - kp.mean[:, :, None, None]     # (N, K, H, W, 2)
    P = torch.linalg.inv(kp.cov)[:, :, None, None]                                        # (N, K, 1, 1, 2, 2)
    dx, dy = d[..., 0], d[..., 1]
    quad = P[..., 0, 0] * dx * dx + (P[..., 0, 1] + P[..., 1, 0]) * dx * dy + P[..., 1, 1] * dy * dy
    return torch.exp(-0.5 * quad.clamp_min(0))   # a transferred Σ(t) need not be positive definite


def deform(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: x (N, C, h, w) read at ``flow`` (N, H, W, 2), the flow resized to x's size first."""
    if flow.shape[1:3] != x.shape[2:]:
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=x.shape[2:], mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x, flow, align_corners=False)


class DownBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True), nn.AvgPool2d(2))


class UpBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU(True))


class Encoder(nn.Module):
    """The U-Net's down path: x -> skips [x (S), level 1 (S/2), ..., level L (S/2^L)]."""

    def __init__(self, c_in: int, widths: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(DownBlock(a, b) for a, b in zip([c_in, *widths[:-1]], widths))

    def forward(self, x):
        skips = [x]
        for block in self.blocks:
            skips.append(block(skips[-1]))
        return skips


class Decoder(nn.Module):
    """The U-Net's up path over skips with ``skip_channels`` [c_0, ..., c_L] channels: from the deepest,
    each up block's output is concatenated with the skip of its resolution; out: widths[0] + c_0 channels."""

    def __init__(self, skip_channels: list[int], widths: list[int]):
        super().__init__()
        L = len(widths)
        outs = [widths[max(i - 1, 0)] for i in range(L)]     # up block i leads to level i's resolution
        ins = [skip_channels[L] if i == L - 1 else outs[i + 1] + skip_channels[i + 1] for i in range(L)]
        self.blocks = nn.ModuleList(UpBlock(ins[i], outs[i]) for i in range(L))
        self.out_channels = outs[0] + skip_channels[0]

    def forward(self, skips):
        h = skips[-1]
        for i in reversed(range(len(self.blocks))):
            h = torch.cat([self.blocks[i](h), skips[i]], 1)
        return h


class Hourglass(nn.Module):
    """U-Net: (N, c_in, S, S) -> (N, c_out, S, S)."""

    def __init__(self, c_in: int, c_out: int, widths: list[int]):
        super().__init__()
        self.encoder = Encoder(c_in, widths)
        self.decoder = Decoder([c_in, *widths], widths)
        self.out = nn.Conv2d(self.decoder.out_channels, c_out, 3, padding=1)

    def forward(self, x):
        return self.out(self.decoder(self.encoder(x)))


class KeypointDetector(nn.Module):
    """Δ: frames (N, C, S, S) -> Keypoints: the mean and covariance of K softmax heatmaps."""

    def __init__(self, cfg: MonkeyNetConfig):
        super().__init__()
        self.cfg = cfg
        self.hourglass = Hourglass(cfg.channels, cfg.keypoints, cfg.kp_widths)

    def forward(self, x) -> Keypoints:
        logits = self.hourglass(x)                                               # (N, K, S, S)
        N, K, H, W = logits.shape
        heat = F.softmax(logits.flatten(2) / self.cfg.temperature, -1)           # (N, K, H*W), sums to 1
        p = coordinate_grid(H, W, x.device).view(H * W, 2)
        mean = heat @ p                                                          # (N, K, 2)
        second = (heat @ (p[:, :, None] * p[:, None, :]).view(H * W, 4)).view(N, K, 2, 2)   # E[p pᵀ]
        cov = second - mean[..., :, None] * mean[..., None, :]
        return Keypoints(mean, cov + self.cfg.cov_eps * torch.eye(2, device=x.device))


class DenseMotionNetwork(nn.Module):
    """M: (source frame, driving and source keypoints) -> backward flow F (N, S, S, 2), part masks (N, K+1, S, S)."""

    def __init__(self, cfg: MonkeyNetConfig):
        super().__init__()
        parts = cfg.keypoints + 1
        self.hourglass = Hourglass(parts * (1 + cfg.channels), parts + 2, cfg.motion_widths)
        # F starts without residual and leaning to the background (part 0), which does not move
        nn.init.zeros_(self.hourglass.out.weight)
        with torch.no_grad():
            self.hourglass.out.bias.copy_(torch.tensor([2.0] + [0.0] * (parts - 1) + [0.0, 0.0]))

    def forward(self, source, kp_driving: Keypoints, kp_source: Keypoints, heat: torch.Tensor):
        N, C, H, W = source.shape
        P = heat.shape[1]                                                       # K + 1 parts
        zero = kp_source.mean.new_zeros(N, 1, 2)
        shift = torch.cat([zero, kp_source.mean - kp_driving.mean], 1)          # (N, P, 2): where each part reads S
        grid = coordinate_grid(H, W, source.device)
        coarse = grid + shift[:, :, None, None]                                 # (N, P, H, W, 2)
        moved = F.grid_sample(source.repeat_interleave(P, 0), coarse.flatten(0, 1), align_corners=False)
        moved = moved.view(N, P * C, H, W)                                      # the source moved per part
        out = self.hourglass(torch.cat([heat, moved], 1))
        mask = F.softmax(out[:, :P], 1)                                         # (N, P, H, W)
        flow = grid + torch.einsum("nphw,npi->nhwi", mask, shift) + out[:, P:].permute(0, 2, 3, 1)
        return flow, mask


class Generator(nn.Module):
    """G: the source frame's encoder skips deformed by F, the Gaussian differences beside each, decoded."""

    def __init__(self, cfg: MonkeyNetConfig):
        super().__init__()
        parts, w = cfg.keypoints + 1, cfg.gen_widths
        self.encoder = Encoder(cfg.channels, w)
        self.decoder = Decoder([c + parts for c in [cfg.channels, *w]], w)
        self.out = nn.Conv2d(self.decoder.out_channels, cfg.channels, 3, padding=1)

    def forward(self, source, flow, heat):
        skips = []
        for s in self.encoder(source):
            skips.append(torch.cat([deform(s, flow), F.interpolate(heat, size=s.shape[2:], mode="area")], 1))
        return torch.sigmoid(self.out(self.decoder(skips)))


class MonkeyNet(nn.Module):
    def __init__(self, cfg: MonkeyNetConfig):
        super().__init__()
        self.cfg = cfg
        self.keypoint_detector = KeypointDetector(cfg)
        self.dense_motion = DenseMotionNetwork(cfg)
        self.generator = Generator(cfg)

    def forward(self, source, kp_source: Keypoints, kp_driving: Keypoints) -> dict:
        """The driving frame generated from ``source`` (N, C, S, S) and both frames' keypoints."""
        S = source.shape[-1]
        heat = gaussians(kp_driving, S, S) - gaussians(kp_source, S, S)         # (N, K, S, S)
        heat = torch.cat([heat.new_zeros(len(heat), 1, S, S), heat], 1)         # the background has no keypoint
        flow, mask = self.dense_motion(source, kp_driving, kp_source, heat)
        return {"prediction": self.generator(source, flow, heat), "flow": flow, "mask": mask}

    def reconstruct(self, source, driving) -> dict:
        """Training: the driving frame (N, C, S, S) from the source frame of the same clip."""
        return self(source, self.keypoint_detector(source), self.keypoint_detector(driving))

    @torch.no_grad()
    def animate(self, source, driving) -> torch.Tensor:
        """Relative motion transfer: ``source`` frames (B, C, S, S) moved as ``driving`` videos (B, T, C, S, S)
        move from their first frame -> videos (B, T, C, S, S)."""
        B, T = driving.shape[:2]
        kp_s = self.keypoint_detector(source)
        kp_d = self.keypoint_detector(driving.flatten(0, 1))
        d_mean, d_cov = kp_d.mean.view(B, T, -1, 2), kp_d.cov.view(B, T, -1, 2, 2)
        mean = kp_s.mean[:, None] + d_mean - d_mean[:, :1]                      # (B, T, K, 2)
        cov = d_cov @ torch.linalg.inv(d_cov[:, :1]) @ kp_s.cov[:, None]        # (B, T, K, 2, 2)
        def each_step(a):  # (B, ...) -> (B*T, ...): the source once per driving frame
            return a.repeat_interleave(T, 0)

        out = self(each_step(source), Keypoints(each_step(kp_s.mean), each_step(kp_s.cov)),
                   Keypoints(mean.flatten(0, 1), cov.flatten(0, 1)))
        return out["prediction"].view(B, T, *source.shape[1:])


def reconstruction_loss(model: MonkeyNet, source, driving) -> torch.Tensor:
    """L1 between the generated and the real driving frame (mean over pixels and the batch)."""
    return F.l1_loss(model.reconstruct(source, driving)["prediction"], driving)


def frame_pairs(frames: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One (source, driving) pair of frames drawn uniformly from every clip of (B, T, C, H, W)."""
    B, T = frames.shape[:2]
    rows = torch.arange(B)
    return frames[rows, torch.randint(0, T, (B,), generator=g)], frames[rows, torch.randint(0, T, (B,), generator=g)]


def train(clip_shards: list[str], out: str | Path, ckpt_dir: str | Path, cfg: MonkeyNetConfig,
          tcfg: MonkeyNetTrainConfig, log=print) -> dict:
    """Train on frame pairs of the training clips, drawn from the epoch's shuffling generator
    (``engine.fit_system``: resumable mid-epoch, a stale checkpoint retrains)."""
    dev = prelude(tcfg.threads, tcfg.device)
    data = ClipDataset(clip_shards, preload=tcfg.preload)
    seed_everything(tcfg.seed)
    model = MonkeyNet(cfg).to(dev)
    opt = adam(model.parameters(), lr=tcfg.lr, betas=tcfg.betas)

    def step(b: dict, at: At) -> dict:
        source, driving = frame_pairs(b["frames"], at.gen)
        loss = reconstruction_loss(model, source.to(dev), driving.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"l1": loss.item()}

    return fit_system("monkeynet", data, model, {"opt": opt}, step, out, ckpt_dir, cfg, tcfg, clip_shards, dev, log)


def load(path, device="cpu") -> MonkeyNet:
    return load_trained(path, MonkeyNet, MonkeyNetConfig, device)


def transfer_pair(model: MonkeyNet):
    """(swap, reconstruct) for ``s3vae.evaluation.metrics.swap_scores``: clip A's first frame animated by the partner
    B's motion, and by A's own."""
    return (lambda a, b: model.animate(a[:, 0], b)), (lambda a: model.animate(a[:, 0], a))


@torch.no_grad()
def evaluate(model: MonkeyNet, judge, test_shards, static_labels: list[str], dynamic_labels: list[str],
             batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """The swap score of ``s3vae.evaluation.metrics.swap_scores`` (Fig. 4 as a number): A's first frame animated by
    B's keypoint motion must keep A's static labels and show B's dynamic ones; ``reconstruction``: A's first
    frame animated by A. MonkeyNet has no z_f or z_1:T to sample, so there are no Table 1 metrics."""
    from s3vae.evaluation.metrics import swap_scores

    model.eval()
    data = ClipDataset(test_shards, preload=True)
    return swap_scores(*transfer_pair(model), judge, data, static_labels, dynamic_labels, batch_size, seed, device)
