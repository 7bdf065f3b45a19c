"""Mel-spectrogram representation-swapping grid for audio (paper App. E, Fig. 9).

The first row shows real segments whose z_1:T (linguistic content) is used, the first column real
segments whose z_f (timbre) is used, and cell (i, j) the decoding of z_f of row i with z_1:T of
column j (posterior means). Each heatmap is one 200 ms segment: 20 steps on the x-axis, the 80 mel
bands on the y-axis (low frequencies at the bottom), all on one colour scale. The generated block
is framed in black, as in the paper.

The model needs ``encode(x (B, T, 80)) -> {"zf_mu": (B, Df), "zt_mu": (B, T, Dt), ...}`` and
``decode(zf (B, Df), zt (B, T, Dt)) -> (B, T, 80)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from s3vae.data import ShardError, open_shard


@torch.no_grad()
def swap_features(model, static_x: np.ndarray, dynamic_x: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Decoded features (S, D, T, 80): z_f of ``static_x[i]`` with z_1:T of ``dynamic_x[j]``."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        xs = torch.as_tensor(np.asarray(static_x, np.float32), device=device)
        xd = torch.as_tensor(np.asarray(dynamic_x, np.float32), device=device)
        zf = model.encode(xs)["zf_mu"]
        zt = model.encode(xd)["zt_mu"]
        s, d = len(zf), len(zt)
        out = model.decode(zf.repeat_interleave(d, dim=0), zt.repeat(s, 1, 1))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return out.detach().float().cpu().numpy().reshape(s, d, *out.shape[1:])


def swap_grid(model, static_x: np.ndarray, dynamic_x: np.ndarray, path: str | Path,
              device: str | torch.device = "cpu", static_names: Sequence[str] | None = None,
              dynamic_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Plot the (1 + S) x (1 + D) grid of mel heatmaps to a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    static_x, dynamic_x = np.asarray(static_x, np.float32), np.asarray(dynamic_x, np.float32)
    gen = swap_features(model, static_x, dynamic_x, device)
    s, d = len(static_x), len(dynamic_x)
    allv = np.concatenate([static_x.ravel(), dynamic_x.ravel(), gen.ravel()])
    vmin, vmax = np.percentile(allv, [1, 99])
    fig, axes = plt.subplots(1 + s, 1 + d, figsize=(1.3 * (1 + d), 1.5 * (1 + s)), squeeze=False)

    def show(ax, x):
        ax.imshow(np.asarray(x).T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    axes[0, 0].axis("off")
    for j in range(d):
        show(axes[0, 1 + j], dynamic_x[j])
        axes[0, 1 + j].set_title(dynamic_names[j] if dynamic_names else f"$z_{{1:T}}$ {j}", fontsize=7)
    for i in range(s):
        show(axes[1 + i, 0], static_x[i])
        axes[1 + i, 0].set_ylabel(static_names[i] if static_names else f"$z_f$ {i}", fontsize=7)
        for j in range(d):
            show(axes[1 + i, 1 + j], gen[i, j])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    # frame the generated block (figure coordinates of its corner axes)
    lo, hi = axes[-1, 1].get_position(), axes[1, -1].get_position()
    pad = 0.004
    fig.add_artist(Rectangle((lo.x0 - pad, lo.y0 - pad), hi.x1 - lo.x0 + 2 * pad, hi.y1 - lo.y0 + 2 * pad,
                             transform=fig.transFigure, fill=False, edgecolor="black", linewidth=1.5))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pick_segments(shards: Sequence[str], n: int, seed: int = 0, distinct: str = "speaker",
                  exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` segments from different speakers (``distinct="speaker"``) or utterances, seeded.

    From each chosen utterance the segment with the highest mean feature value (the most speech)
    is taken. Returns frames (n, T, 80), speakers (n,), utterance ids (n,); ``exclude`` lists
    utterance ids not to use. Fewer than ``n`` are returned when the shards do not have enough.
    """
    frames, spk, utt = [], [], []
    for p in shards:
        with open_shard(p, ["frames", "labels/utterance", "labels/speaker"]) as f:
            frames.append(f["frames"][()])
            spk.append(f["labels/speaker"][()])
            utt.append(f["labels/utterance"][()])
    if not frames:
        raise ShardError("no shards given")
    frames, spk, utt = np.concatenate(frames), np.concatenate(spk), np.concatenate(utt)
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    rows = []
    for u in rng.permutation(np.unique(utt)):
        if len(rows) == n:
            break
        key = int(spk[utt == u][0]) if distinct == "speaker" else int(u)
        if key in used or int(u) in set(exclude):
            continue
        used.add(key)
        cand = np.flatnonzero(utt == u)
        rows.append(cand[np.argmax(frames[cand].mean(axis=(1, 2)))])
    rows = np.asarray(rows, dtype=np.int64)
    return frames[rows], spk[rows], utt[rows]


def swap_grid_from_shards(model, shards: Sequence[str], path: str | Path, n_static: int = 4, n_dynamic: int = 6,
                          seed: int = 0, device: str | torch.device = "cpu", title: str | None = None) -> Path:
    """Fig. 9 from test shards: z_f of ``n_static`` speakers x z_1:T of ``n_dynamic`` other utterances."""
    xs, ss, us = pick_segments(shards, n_static, seed, "speaker")
    xd, sd, ud = pick_segments(shards, n_dynamic, seed + 1, "utterance", exclude=us.tolist())
    return swap_grid(model, xs, xd, path, device, [f"spk {k}" for k in ss],
                     [f"utt {u} (spk {k})" for u, k in zip(ud, sd)], title)
