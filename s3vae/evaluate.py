"""Evaluation: judge classifiers and the metrics of Appendix C (Acc, IS, H(y|x), H(y)).

Protocol (paper §5.1.3, as made precise by the later literature, e.g. C-DSVAE, Bai et al. 2021):

* **static factors** (Sprites' four attributes): keep z_f = the posterior mean of a real test clip,
  sample z_1:T from the learned prior p(z_1:T), decode, and ask the judge whether the attributes of
  the generated clip are those of the real clip;
* **dynamic factor** (Sprites' action): keep z_1:T = the posterior means of a real test clip, sample
  z_f ~ N(0, I), decode, and judge the action.

Acc is the agreement between the judge's prediction on the generated clip and the real clip's
label. IS = exp(E_x KL(p(y|x) || p(y))), H(y|x) = E_x[-sum_y p(y|x) log p(y|x)], H(y) = entropy of
p(y) = mean_x p(y|x), all on the judge's softmax over the generated clips, on a class-balanced subset
of the test clips (every class cut down to the rarest class's count; Sprites' actions are balanced by
construction, so for them it is the whole set). For Sprites, Table 1's
Acc is the mean of the action accuracy and the attribute accuracy (itself the mean over the four
attributes), while IS, H(y|x) and H(y) are those of the action head (9 classes, which is what the
paper's values, e.g. H(y) = 2.197 ≈ ln 9, are on scale with). All are written out separately.

The judge is trained on real training clips with ground-truth labels; its held-out accuracy on the
real test clips is written beside it so that every generated-clip score can be read against it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from s3vae.data import ClipDataset, batch_of
from s3vae.model import S3VAE
from s3vae.utils import atomic_torch_save, pick_device, seed_everything

# --- judge ------------------------------------------------------------------------------------
FRAME_NETS = ("strided", "vgg")


@dataclass
class JudgeConfig:
    channels: int = 3
    image_size: int = 64
    frames: int = 8
    heads: dict = field(default_factory=lambda: {"action": 9})  # label name -> number of classes
    dynamic: list = field(default_factory=lambda: ["action"])   # heads read the whole sequence
    width: int = 32
    feat_dim: int = 128
    spatial_pool: str = "flatten"   # frame features from the flattened 4x4 map, or its "max" (moving objects)
    frame_net: str = "strided"      # "strided": 4x4 stride-2 convs; "vgg": two 3x3 convs + 2x2 max-pool a level


class Judge(nn.Module):
    """A per-frame CNN; dynamic heads read the concatenated frame features (order matters),
    static heads the time-averaged features."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.frame_net not in FRAME_NETS:
            raise ValueError(f"judge frame_net must be one of {FRAME_NETS}, got {cfg.frame_net!r}")

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


def _batches(n: int, bs: int, shuffle: bool, g: torch.Generator | None = None):
    idx = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    return [idx[i:i + bs] for i in range(0, n, bs)]


@torch.no_grad()
def judge_accuracy(judge: Judge, data: ClipDataset, device, batch_size: int = 256,
                   blur: float = 0.0) -> dict[str, float]:
    """Accuracy per head on real clips (``blur`` > 0: each blurred by a Gaussian of sigma ``blur``)."""
    judge.eval()
    correct = {k: 0 for k in judge.cfg.heads}
    for idx in _batches(len(data), batch_size, False):
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
                threads: int = 0, blur: float = 0.0, train_frames: int = 0, log=print) -> dict:
    """Train the judge on real training clips; report its accuracy on the real test clips.

    ``blur`` > 0: every training clip is blurred by a random Gaussian (sigma up to ``blur`` pixels), so
    that the judge reads colours and shapes rather than the sharpness of a few pixels (at 32x32, a 3x3
    blur of real clips otherwise flips the skin colour it reads: docs/implementation.md). Its accuracy
    on sharp and on blurred real test clips is reported. ``train_frames`` > 0 (judges with static heads
    only): each training clip contributes that many random frames (the heads average over frames, so
    this trains as many clips for a fraction of the cost); testing reads every frame."""
    if train_frames and cfg.dynamic:
        raise ValueError("train_frames needs a judge without dynamic heads (they read the whole clip)")
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    seed_everything(seed)
    train_data = ClipDataset(train_shards, preload=True)
    test_data = ClipDataset(test_shards, preload=True)
    judge = Judge(cfg).to(dev)
    opt = torch.optim.Adam(judge.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        judge.train()
        total = 0.0
        batches = _batches(len(train_data), batch_size, True, g)
        for idx in tqdm(batches, desc=f"judge epoch {epoch + 1}/{epochs}", file=sys.stderr, mininterval=30):
            b = batch_of(train_data, idx)
            x = b["frames"]
            if train_frames:
                keep = torch.rand(x.shape[:2], generator=g).argsort(1)[:, :train_frames]      # (B, k)
                x = x[torch.arange(len(x))[:, None], keep]                                # (B, k, C, H, W)
            x = random_blur(x, blur, g) if blur > 0 else x
            logits = judge(x.to(dev))
            loss = sum(F.cross_entropy(logits[k], b[k].to(dev)) for k in cfg.heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        log(f"judge epoch {epoch + 1}: mean loss {total / len(batches):.4f}")
    metrics = {"test_accuracy": judge_accuracy(judge, test_data, dev),
               "test_accuracy_blurred": judge_accuracy(judge, test_data, dev, blur=1.0),
               "train_accuracy": judge_accuracy(judge, train_data, dev),
               "n_train": len(train_data), "n_test": len(test_data), "epochs": epochs}
    log(f"judge held-out accuracy: {metrics['test_accuracy']}")
    atomic_torch_save({"model": judge.state_dict(), "config": asdict(cfg), "metrics": metrics}, out)
    Path(metrics_out).write_text(json.dumps(metrics, indent=2))
    return metrics


def load_judge(path, device="cpu") -> Judge:
    ck = torch.load(path, map_location=device, weights_only=True)
    judge = Judge(JudgeConfig(**ck["config"])).to(device)
    judge.load_state_dict(ck["model"])
    return judge.eval()


# --- Appendix C metrics -----------------------------------------------------------------------
def appendix_c_metrics(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> dict[str, float]:
    """Acc, IS, H(y|x), H(y) (eq. 15-17) from the judge's softmax ``probs`` (N, K) on generated clips."""
    probs = np.asarray(probs, dtype=np.float64)
    p_y = probs.mean(0)
    h_y_x = float(-(probs * np.log(probs + eps)).sum(1).mean())
    h_y = float(-(p_y * np.log(p_y + eps)).sum())
    kl = (probs * (np.log(probs + eps) - np.log(p_y + eps))).sum(1)
    return {"acc": float((probs.argmax(1) == np.asarray(labels)).mean()), "IS": float(np.exp(kl.mean())),
            "H_y_x": h_y_x, "H_y": h_y}


def balanced_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset: every class present cut down to the rarest one's count
    (a seeded choice), sorted. The metrics are computed "with classes balanced": on an
    unbalanced test set (MUG) the inter-entropy H(y) would otherwise reward the class skew."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), counts.min(), replace=False) for c in classes]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


@torch.no_grad()
def generate(model: S3VAE, x: torch.Tensor, keep: str) -> torch.Tensor:
    """Generated clips for a batch of real clips: ``keep='dynamic'`` keeps z_1:T (posterior mean) and
    samples z_f ~ p(z_f); ``keep='static'`` keeps z_f (posterior mean) and samples z_1:T ~ p(z_1:T)."""
    enc = model.encode(x)
    B, T = x.shape[:2]
    if keep == "dynamic":
        return model.decode(torch.randn_like(enc["zf_mu"]), enc["zt_mu"])
    if keep == "static":
        return model.decode(enc["zf_mu"], model.sample_zt(B, T, device=x.device))
    raise ValueError(f"keep must be 'static' or 'dynamic', got {keep!r}")


def swap_partners(dynamic: np.ndarray, static: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """For each clip i a partner j with another dynamic label (and, given ``static`` (N, S) labels,
    at least one other static label), drawn at random; clips without such a partner get -1."""
    rng = np.random.default_rng(seed)
    dynamic = np.asarray(dynamic)
    ok = dynamic[:, None] != dynamic[None, :]
    if static is not None:
        ok &= (np.asarray(static)[:, None, :] != np.asarray(static)[None, :, :]).any(-1)
    out = np.full(len(dynamic), -1)
    for i in range(len(dynamic)):
        cand = np.flatnonzero(ok[i])
        if len(cand):
            out[i] = rng.choice(cand)
    return out


@torch.no_grad()
def swap_generate(model: S3VAE, x_static: torch.Tensor, x_dynamic: torch.Tensor) -> torch.Tensor:
    """Motion transfer (Fig. 4): decode z_f of ``x_static`` (posterior mean) with z_1:T of ``x_dynamic``."""
    return model.decode(model.encode(x_static)["zf_mu"], model.encode(x_dynamic)["zt_mu"])


@torch.no_grad()
def reconstruct(model: S3VAE, x: torch.Tensor) -> torch.Tensor:
    """Plain reconstruction: decode the posterior means of z_f and z_1:T of the same clips."""
    enc = model.encode(x)
    return model.decode(enc["zf_mu"], enc["zt_mu"])


def latent_swap(model: S3VAE):
    """(swap, reconstruct) for ``swap_scores``: clips decoded from z_f of A and z_1:T of B, and from A's own."""
    return (lambda a, b: swap_generate(model, a, b)), (lambda a: reconstruct(model, a))


@torch.no_grad()
def evaluate_model(model: S3VAE, judge: Judge, test_shards, static_labels: list[str], dynamic_labels: list[str],
                   batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """Appendix C metrics of one trained model under the protocol in the module docstring."""
    seed_everything(seed)
    data = ClipDataset(test_shards, preload=True)
    probs = {k: [] for k in static_labels + dynamic_labels}
    labels = {k: [] for k in probs}
    for idx in _batches(len(data), batch_size, False):
        b = batch_of(data, idx)
        x = b["frames"].to(device)
        for keep, names in (("dynamic", dynamic_labels), ("static", static_labels)):
            if not names:
                continue
            out = judge(generate(model, x, keep))
            for k in names:
                probs[k].append(F.softmax(out[k], -1).cpu().numpy())
                labels[k].append(b[k].numpy())
    result = judged_metrics({k: np.concatenate(v) for k, v in probs.items()},
                            {k: np.concatenate(v) for k, v in labels.items()}, static_labels, dynamic_labels, seed)
    result.update(swap_scores(*latent_swap(model), judge, data, static_labels, dynamic_labels, batch_size, seed,
                              device))
    return result


def judged_metrics(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], static_labels: list[str],
                   dynamic_labels: list[str], seed: int = 0) -> dict:
    """Appendix C metrics per label from the judge's softmax on generated clips (one per test clip) and
    the labels they should show, then the mean over each group's labels (e.g. Sprites' four attributes)."""
    per_label = {}
    for k in probs:
        keep = balanced_indices(labels[k], seed)  # equal clips per true class, so H(y) and IS are not skewed
        per_label[k] = {**appendix_c_metrics(probs[k][keep], labels[k][keep]), "n_balanced": int(len(keep))}
    result = {"per_label": per_label, "n_test": len(next(iter(labels.values())))}
    for group, names in (("dynamic", dynamic_labels), ("static", static_labels)):
        if names:
            result[group] = {m: float(np.mean([per_label[k][m] for k in names])) for m in per_label[names[0]]}
    return result


def swap_test_partners(data: ClipDataset, static_labels: list[str], dynamic_labels: list[str],
                       seed: int = 0) -> np.ndarray:
    """The partner B of every test clip A in the swap score (``swap_partners``; -1: none): another dynamic
    label and other static labels; without a dynamic label (SMMNIST), other static labels."""
    static_y = np.stack([data.arrays(f"labels/{k}") for k in static_labels], 1) if static_labels else None
    if dynamic_labels:
        return swap_partners(data.arrays(f"labels/{dynamic_labels[0]}"), static_y, seed)
    return swap_partners(np.unique(static_y, axis=0, return_inverse=True)[1].ravel(), None, seed)


@torch.no_grad()
def swap_scores(swap, reconstruct, judge: Judge, data: ClipDataset, static_labels: list[str],
                dynamic_labels: list[str], batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """Fig. 4's motion transfer as a number (the paper shows it only as pictures), and its ceiling.

    ``swap``: every test clip A is generated by ``swap(A, B)`` with a partner B that has another dynamic
    label and other static labels (``swap_test_partners``); the judge must find A's static and B's dynamic
    labels. An S3VAE decodes z_f of A with z_1:T of B (``latent_swap``); MonkeyNet animates A's first
    frame by B's keypoint motion (``s3vae.monkeynet.transfer_pair``). ``reconstruction``: the judge on
    ``reconstruct(A)`` (an S3VAE: z_f and z_1:T of the same clip), the ceiling that blur leaves for every
    generated score. Accuracies per label and per group (mean over labels).
    """
    names = static_labels + dynamic_labels
    y = {k: data.arrays(f"labels/{k}") for k in names}
    partner = swap_test_partners(data, static_labels, dynamic_labels, seed)
    hits = {"swap": {k: [] for k in names}, "reconstruction": {k: [] for k in names}}
    for idx in _batches(len(data), batch_size, False):
        idx = [i for i in idx if partner[i] >= 0]
        if not idx:
            continue
        x = batch_of(data, idx)["frames"].to(device)
        x_b = batch_of(data, partner[idx])["frames"].to(device)
        outs = {"swap": judge(swap(x, x_b)), "reconstruction": judge(reconstruct(x))}
        for kind, out in outs.items():
            for k in names:
                source = partner[idx] if kind == "swap" and k in dynamic_labels else np.asarray(idx)
                hits[kind][k].append(out[k].argmax(-1).cpu().numpy() == y[k][source])
    result = {}
    for kind, per in hits.items():
        acc = {k: float(np.concatenate(v).mean()) for k, v in per.items() if v}
        result[kind] = {"per_label": acc, "n": int((partner >= 0).sum())}
        for group, group_names in (("dynamic", dynamic_labels), ("static", static_labels)):
            if group_names and acc:
                result[kind][group] = float(np.mean([acc[k] for k in group_names]))
    return result


def summary_row(result: dict, primary: str = "dynamic") -> dict:
    """Table 1's cells from one evaluation: Acc averaged over the factors evaluated; IS and the
    entropies of the ``primary`` factor (see the module docstring)."""
    groups = [g for g in ("dynamic", "static") if g in result]
    row = {"acc": float(np.mean([result[g]["acc"] for g in groups]))}
    src = result[primary] if primary in result else result[groups[0]]
    row.update({"IS": src["IS"], "H_y_x": src["H_y_x"], "H_y": src["H_y"]})
    for g in groups:
        row[f"acc_{g}"] = result[g]["acc"]
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="evaluate a trained S3VAE with a judge (Appendix C metrics)")
    p.add_argument("--model", required=True)
    p.add_argument("--judge", required=True)
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--static-labels", nargs="*", default=[])
    p.add_argument("--dynamic-labels", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from s3vae.train import load_model
    res = evaluate_model(load_model(a.model), load_judge(a.judge), a.test, a.static_labels, a.dynamic_labels,
                         seed=a.seed)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
