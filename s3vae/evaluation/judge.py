"""Judge classifiers: per-label CNNs trained on real clips with ground truth (Appendix C).

A judge reads a clip (B, T, C, H, W) and returns one logit vector per label; static labels from
per-frame features pooled over time, dynamic labels from the whole sequence. It is trained on randomly
blurred real training clips, and its held-out accuracy on the real test clips is written beside it
so that every generated-clip score (``s3vae.evaluation.metrics``) can be read against it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3vae.checkpoint import Checkpoint
from s3vae.data import ClipDataset, batch_of, index_batches
from s3vae.engine import At, Schedule, fit, prelude
from s3vae.utils import adam, atomic_torch_save, check_literals, load_trained, seed_everything

# --- judge ------------------------------------------------------------------------------------
FrameNet = Literal["strided", "vgg"]
SpatialPool = Literal["flatten", "max"]
FRAME_NETS, SPATIAL_POOLS = get_args(FrameNet), get_args(SpatialPool)


@dataclass
class JudgeConfig:
    channels: int = 3
    image_size: int = 64
    frames: int = 8
    heads: dict = field(default_factory=lambda: {"action": 9})  # label name -> number of classes
    dynamic: list = field(default_factory=lambda: ["action"])   # heads read the whole sequence
    width: int = 32
    feat_dim: int = 128
    spatial_pool: SpatialPool = "flatten"  # frame features from the flattened 4x4 map, or its "max" (moving objects)
    frame_net: FrameNet = "strided"  # "strided": 4x4 stride-2 convs; "vgg": two 3x3 convs + 2x2 max-pool a level

    def __post_init__(self):
        check_literals(self)


class Judge(nn.Module):
    """A per-frame CNN; dynamic heads read the concatenated frame features (order matters),
    static heads the time-averaged features."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg

        def conv(c_in, c_out, k, stride, pad):
            return [nn.Conv2d(c_in, c_out, k, stride, pad), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]

        w, layers, c_in, size = cfg.width, [], cfg.channels, cfg.image_size
        while size > 4:  # halve the map down to 4x4
            if cfg.frame_net == "vgg":  # finer strokes: SMMNIST's thin, overlapping digits at 32x32
                layers += conv(c_in, w, 3, 1, 1) + conv(w, w, 3, 1, 1) + [nn.MaxPool2d(2)]
            else:
                layers += conv(c_in, w, 4, 2, 1)
            c_in, size, w = w, size // 2, min(2 * w, 256)
        if cfg.spatial_pool == "max":  # translation invariant: SMMNIST's digits can be anywhere
            layers += conv(c_in, c_in, 3, 1, 1) + [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.feat_dim)]
        else:
            layers += [nn.Flatten(), nn.Linear(c_in * 16, cfg.feat_dim)]
        layers += [nn.LeakyReLU(0.2, inplace=True)]
        self.frame_net = nn.Sequential(*layers)
        self.heads = nn.ModuleDict()
        for name, k in cfg.heads.items():
            d_in = cfg.feat_dim * (cfg.frames if name in cfg.dynamic else 1)
            self.heads[name] = nn.Sequential(nn.Dropout(0.2), nn.Linear(d_in, 256), nn.ReLU(inplace=True),
                                             nn.Linear(256, k))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T = x.shape[:2]
        h = self.frame_net(x.flatten(0, 1)).view(B, T, -1)  # (B*T, C, H, W) -> (B, T, F)
        return {name: head(h.flatten(1) if name in self.cfg.dynamic else h.mean(1))
                for name, head in self.heads.items()}


@torch.no_grad()
def judge_accuracy(judge: Judge, data: ClipDataset, device, batch_size: int = 256,
                   blur: float = 0.0) -> dict[str, float]:
    """Accuracy per head on real clips (``blur`` > 0: each blurred by a Gaussian of sigma ``blur``)."""
    judge.eval()
    correct = {k: 0 for k in judge.cfg.heads}
    for idx in index_batches(len(data), batch_size, False):
        b = batch_of(data, idx)
        x = b["frames"]
        if blur > 0:
            x = gaussian_blur(x, torch.full((len(x),), blur))
        out = judge(x.to(device))
        for k in correct:
            correct[k] += int((out[k].argmax(-1).cpu() == b[k]).sum())
    return {k: v / len(data) for k, v in correct.items()}


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each clip of x (B, T, C, H, W) blurred by a 3x3 Gaussian of its own ``sigma`` (B,) in pixels."""
    B, T, C, H, W = x.shape
    sigma = sigma.clamp_min(1e-6)
    w = torch.exp(-torch.tensor([1.0, 0.0, 1.0])[None] / (2 * sigma[:, None] ** 2))   # (B, 3)
    w = w / w.sum(1, keepdim=True)
    k = (w[:, :, None] * w[:, None, :]).to(x)                                           # (B, 3, 3)
    k = k[:, None, None].expand(B, T * C, 1, 3, 3).reshape(B * T * C, 1, 3, 3)
    y = F.conv2d(F.pad(x.reshape(1, B * T * C, H, W), (1, 1, 1, 1), mode="replicate"), k, groups=B * T * C)
    return y.view(B, T, C, H, W)


def random_blur(x: torch.Tensor, max_sigma: float, g: torch.Generator) -> torch.Tensor:
    """``gaussian_blur`` with each clip's sigma ~ U(0, max_sigma)."""
    return gaussian_blur(x, torch.rand(x.shape[0], generator=g) * max_sigma)


def train_judge(train_shards, test_shards, out, metrics_out, cfg: JudgeConfig, epochs: int = 3,
                batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: str = "auto",
                threads: int = 0, blur: float = 0.0, train_frames: int = 0, log=print, ckpt_dir=None) -> dict:
    """Train the judge on real training clips; report its accuracy on the real test clips.

    ``blur`` > 0: every training clip is blurred by a random Gaussian (sigma up to ``blur`` pixels), so
    that the judge reads colours and shapes rather than the sharpness of a few pixels (at 32x32, a 3x3
    blur of real clips otherwise flips the skin colour it reads: docs/departures.md). Its accuracy
    on sharp and on blurred real test clips is reported. ``train_frames`` > 0 (judges with static heads
    only): each training clip contributes that many random frames (the heads average over frames, so
    this trains as many clips for a fraction of the cost); testing reads every frame. Resumable mid-epoch
    from ``ckpt_dir`` (default: ``checkpoints/`` beside ``out``); a stale checkpoint retrains."""
    if train_frames and cfg.dynamic:
        raise ValueError("train_frames needs a judge without dynamic heads (they read the whole clip)")
    dev = prelude(threads, device)
    seed_everything(seed)
    train_data = ClipDataset(train_shards, preload=True)
    test_data = ClipDataset(test_shards, preload=True)
    judge = Judge(cfg).to(dev)
    opt = adam(judge.parameters(), lr=lr)

    def step(b: dict, at: At) -> dict:
        x = b["frames"]
        if train_frames:
            keep = torch.rand(x.shape[:2], generator=at.gen).argsort(1)[:, :train_frames]  # (B, k)
            x = x[torch.arange(len(x))[:, None], keep]                                    # (B, k, C, H, W)
        x = random_blur(x, blur, at.gen) if blur > 0 else x
        logits = judge(x.to(dev))
        loss = sum(F.cross_entropy(logits[k], b[k].to(dev)) for k in cfg.heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    settings = dict(batch_size=batch_size, lr=lr, seed=seed, blur=blur, train_frames=train_frames)
    ckpt = Checkpoint(ckpt_dir or Path(out).parent / "checkpoints", {"model": asdict(cfg), "train": settings},
                      list(train_shards), epochs, log, on_stale="restart")
    parts = {"model": judge, "opt": opt}
    progress = ckpt.restore(parts, dev)
    # one shuffling generator for the whole run, seeded once, that the steps draw from too
    fit("judge", train_data, parts, step, ckpt, Schedule(epochs, batch_size, seed, salt=None, drop_last=False),
        progress, dev, log)
    metrics = {"test_accuracy": judge_accuracy(judge, test_data, dev),
               "test_accuracy_blurred": judge_accuracy(judge, test_data, dev, blur=1.0),
               "train_accuracy": judge_accuracy(judge, train_data, dev),
               "n_train": len(train_data), "n_test": len(test_data), "epochs": epochs}
    log(f"judge held-out accuracy: {metrics['test_accuracy']}")
    atomic_torch_save({"model": judge.state_dict(), "config": asdict(cfg), "metrics": metrics}, out)
    Path(metrics_out).write_text(json.dumps(metrics, indent=2))
    return metrics


def load_judge(path, device="cpu") -> Judge:
    return load_trained(path, Judge, JudgeConfig, device)
