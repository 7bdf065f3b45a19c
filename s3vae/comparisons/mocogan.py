"""MoCoGAN (Tulyakov, Liu, Yang & Kautz, CVPR 2018), the categorical variant, as S3VAE compares with it.

A video is a content code z_C, fixed for the whole clip, and a motion trajectory z_M(1..T) that a GRU
makes from per-step noise; an image generator G_I draws every frame from [z_C, z_A, z_M(t)]. Two
discriminators: D_I judges single frames, D_V whole clips (3-D convolutions). S3VAE's Appendix C
evaluates MoCoGAN "directly conditioned on the label y", so z_A is the one-hot code of every labelled
factor of the dataset (Sprites: action and the four attributes; SMMNIST: the two digits; MUG: the
expression), concatenated, and D_V also classifies each factor of real clips (the categorical model of
the MoCoGAN paper, in the manner of InfoGAN/AC-GAN; the generator is trained to make D_V find its
conditioning labels).

Choices the MoCoGAN paper leaves open, as its official code makes them where it has one:

* z_C: 50-d, z_M: 10-d from a GRU cell over 10-d Gaussian noise, GRU state initialised from N(0, I);
  z_A is concatenated to every frame's generator input (constant over time), as in the official code;
* G_I: DCGAN transposed convolutions (as the S3VAE decoder's ``transposed`` option), sigmoid output
  (our clips are in [0, 1]); D_I: DCGAN strided convolutions to one logit; D_V: 3-D convolutions with
  (3, 4, 4) kernels, stride (1, 2, 2) and temporal padding 1 (clips of 8 and 15 frames are shorter than
  the official 16-frame kernels can read), its per-step logits averaged over time;
* losses: the non-saturating GAN loss (binary cross-entropy on logits) for both discriminators, plus the
  category cross-entropy weighted by ``lambda_category`` (1); D_I sees one random frame of every clip;
* Adam, lr 2e-4, betas (0.5, 0.999), weight decay 1e-5 (official); per batch one discriminator step,
  then one generator step through the updated discriminators (the same fake clips);
* conditioning labels of a generated batch: the label combinations of the real batch (so the generator
  sees the data's joint distribution of factors); T_sample = the dataset's clip length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s3vae.data import ClipDataset
from s3vae.engine import At, fit_system, prelude
from s3vae.utils import adam, load_trained, seed_everything


@dataclass
class MoCoGANConfig:
    channels: int = 3
    image_size: int = 64
    frames: int = 8
    labels: dict = field(default_factory=dict)    # label name -> classes: the categorical code z_A
    d_content: int = 50                            # z_C
    d_noise: int = 10                              # per-step noise into the motion GRU
    d_motion: int = 10                             # z_M(t)
    gen_widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64])   # DCGAN, 64x64
    disc_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])

    def __post_init__(self):
        if self.image_size != 4 * 2 ** len(self.gen_widths) or self.image_size != 4 * 2 ** len(self.disc_widths):
            raise ValueError(f"image_size {self.image_size} needs log2(size/4) generator and discriminator widths; "
                             f"got gen_widths={self.gen_widths}, disc_widths={self.disc_widths}")

    @property
    def d_category(self) -> int:
        return sum(self.labels.values())


@dataclass
class MoCoGANTrainConfig:
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    weight_decay: float = 1e-5
    lambda_category: float = 1.0
    seed: int = 1
    device: str = "auto"
    threads: int = 0
    preload: bool = True


class ImageGenerator(nn.Module):
    """G_I: z (N, D) -> frame (N, C, H, W): DCGAN transposed convolutions from a 4x4 map."""

    def __init__(self, cfg: MoCoGANConfig):
        super().__init__()
        d_in = cfg.d_content + cfg.d_category + cfg.d_motion
        w = cfg.gen_widths
        layers = [nn.ConvTranspose2d(d_in, w[0], 4, 1, 0), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        for a, b in zip(w[:-1], w[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w[-1], cfg.channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z[:, :, None, None])


class ImageDiscriminator(nn.Module):
    """D_I: one frame (N, C, H, W) -> real/fake logit (N,)."""

    def __init__(self, cfg: MoCoGANConfig):
        super().__init__()
        w, layers, c = cfg.disc_widths, [], cfg.channels
        for i, b in enumerate(w):
            layers += [nn.Conv2d(c, b, 4, 2, 1)] + ([nn.BatchNorm2d(b)] if i else []) + [nn.LeakyReLU(0.2, True)]
            c = b
        layers += [nn.Conv2d(c, 1, 4, 1, 0)]  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten()


class VideoDiscriminator(nn.Module):
    """D_V: a clip (B, T, C, H, W) -> real/fake logit (B,) and category logits {name: (B, K)}."""

    def __init__(self, cfg: MoCoGANConfig):
        super().__init__()
        self.labels = dict(cfg.labels)
        w, layers, c = cfg.disc_widths, [], cfg.channels
        for i, b in enumerate(w):
            layers += [nn.Conv3d(c, b, (3, 4, 4), (1, 2, 2), (1, 1, 1))]
            layers += ([nn.BatchNorm3d(b)] if i else []) + [nn.LeakyReLU(0.2, True)]
            c = b
        self.net = nn.Sequential(*layers)
        self.out = nn.Conv3d(c, 1 + cfg.d_category, (1, 4, 4))   # per step, over the 4x4 map

    def forward(self, x):
        h = self.out(self.net(x.transpose(1, 2)))                 # (B, C, T, H, W) -> (B, 1+K, T, 1, 1)
        h = h.flatten(2).mean(-1)                                  # (B, 1+K): logits averaged over time
        cats = dict(zip(self.labels, h[:, 1:].split(list(self.labels.values()), dim=1)))
        return h[:, 0], cats


class MoCoGAN(nn.Module):
    def __init__(self, cfg: MoCoGANConfig):
        super().__init__()
        self.cfg = cfg
        self.motion = nn.GRUCell(cfg.d_noise, cfg.d_motion)     # R_M: z_M(t) from noise
        self.generator = ImageGenerator(cfg)
        self.d_image = ImageDiscriminator(cfg)
        self.d_video = VideoDiscriminator(cfg)

    def category_code(self, labels: dict[str, torch.Tensor], batch: int, device) -> torch.Tensor:
        """z_A: the concatenated one-hot codes of every labelled factor (B, sum K)."""
        if not self.cfg.labels:
            return torch.zeros(batch, 0, device=device)
        return torch.cat([F.one_hot(labels[k].to(device).long(), n).float() for k, n in self.cfg.labels.items()], 1)

    def generate(self, labels: dict[str, torch.Tensor], batch: int, T: int | None = None) -> torch.Tensor:
        """Clips (B, T, C, H, W) conditioned on ``labels`` (name -> (B,) class indices)."""
        cfg, dev = self.cfg, next(self.parameters()).device
        T = T or cfg.frames
        z_c = torch.randn(batch, cfg.d_content, device=dev)
        z_a = self.category_code(labels, batch, dev)
        h = torch.randn(batch, cfg.d_motion, device=dev)
        z_m = []
        for _ in range(T):
            h = self.motion(torch.randn(batch, cfg.d_noise, device=dev), h)
            z_m.append(h)
        z_m = torch.stack(z_m, 1)                                               # (B, T, d_motion)
        z = torch.cat([z_c[:, None].expand(-1, T, -1), z_a[:, None].expand(-1, T, -1), z_m], -1)
        return self.generator(z.flatten(0, 1)).view(batch, T, cfg.channels, cfg.image_size, cfg.image_size)


def _category_loss(cats: dict, labels: dict) -> torch.Tensor | float:
    return sum(F.cross_entropy(cats[k], labels[k].to(cats[k].device).long()) for k in cats) if cats else 0.0


def discriminator_loss(model: MoCoGAN, real, fake, labels, pick, lambda_category: float) -> torch.Tensor:
    """D_I on one frame per clip (index ``pick``), D_V on the clips: real -> 1, fake -> 0, plus the
    category cross-entropy of real clips. ``fake`` should come detached."""
    B = real.shape[0]
    rows = torch.arange(B, device=real.device)
    bce = F.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(B, device=real.device), torch.zeros(B, device=real.device)
    real_v, real_cats = model.d_video(real)
    fake_v, _ = model.d_video(fake)
    return (bce(model.d_image(real[rows, pick]), ones) + bce(model.d_image(fake[rows, pick]), zeros)
            + bce(real_v, ones) + bce(fake_v, zeros) + lambda_category * _category_loss(real_cats, labels))


def generator_loss(model: MoCoGAN, fake, labels, pick, lambda_category: float) -> torch.Tensor:
    """Non-saturating: both discriminators should call the fakes real, and D_V find their labels."""
    B = fake.shape[0]
    ones = torch.ones(B, device=fake.device)
    fake_v, cats = model.d_video(fake)
    bce = F.binary_cross_entropy_with_logits
    return (bce(model.d_image(fake[torch.arange(B, device=fake.device), pick]), ones) + bce(fake_v, ones)
            + lambda_category * _category_loss(cats, labels))


def train(clip_shards: list[str], out: str | Path, ckpt_dir: str | Path, cfg: MoCoGANConfig,
          tcfg: MoCoGANTrainConfig, log=print) -> dict:
    """Train (``engine.fit_system``: resumable mid-epoch, a stale checkpoint retrains)."""
    dev = prelude(tcfg.threads, tcfg.device)
    data = ClipDataset(clip_shards, preload=tcfg.preload)
    seed_everything(tcfg.seed)
    model = MoCoGAN(cfg).to(dev)
    opt_g = adam([*model.generator.parameters(), *model.motion.parameters()], lr=tcfg.lr,
                 betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    opt_d = adam([*model.d_image.parameters(), *model.d_video.parameters()], lr=tcfg.lr,
                 betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    names = list(cfg.labels)

    def step(b: dict, at: At) -> dict:
        real, labels, B = b["frames"].to(dev), {k: b[k] for k in names}, len(at.indices)
        fake = model.generate(labels, B, real.shape[1])          # conditioned on the real batch's labels
        pick = torch.randint(0, real.shape[1], (B,), device=dev)  # D_I: one frame per clip
        d_loss = discriminator_loss(model, real, fake.detach(), labels, pick, tcfg.lambda_category)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = generator_loss(model, fake, labels, pick, tcfg.lambda_category)  # the updated discriminators
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    return fit_system("mocogan", data, model, {"opt_g": opt_g, "opt_d": opt_d}, step, out, ckpt_dir, cfg, tcfg,
                      clip_shards, dev, log)


def load(path, device="cpu") -> MoCoGAN:
    return load_trained(path, MoCoGAN, MoCoGANConfig, device)


@torch.no_grad()
def evaluate(model: MoCoGAN, judge, test_shards, static_labels: list[str], dynamic_labels: list[str],
             batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """Appendix C for a generator without an encoder: every test clip's labels condition one generated
    clip, and the judge must find them; the same per-label and per-group record as
    ``s3vae.evaluation.metrics.evaluate_model`` writes (without swap scores: there is nothing to swap)."""
    from s3vae.data import index_batches
    from s3vae.evaluation.metrics import judged_metrics

    seed_everything(seed)
    data = ClipDataset(test_shards, preload=True)
    names = static_labels + dynamic_labels
    y = {k: data.arrays(f"labels/{k}") for k in names}
    probs = {k: [] for k in names}
    for idx in index_batches(len(data), batch_size, False):
        out = judge(model.generate({k: torch.as_tensor(y[k][idx]) for k in names}, len(idx)))
        for k in names:
            probs[k].append(F.softmax(out[k], -1).cpu().numpy())
    return judged_metrics({k: np.concatenate(v) for k, v in probs.items()}, y, static_labels, dynamic_labels, seed)
