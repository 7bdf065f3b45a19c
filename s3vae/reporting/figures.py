"""Qualitative figures of the paper, from a trained model and real test clips.

* ``swap``: representation swapping (Fig. 4, 10, 12, 14): the first row holds real clips giving z_1:T,
  the first column real clips giving z_f; cell (i, j) is decoded from z_f of row i and z_1:T of column j.
  The PNG shows the middle frame of every clip; ``swap.gif`` animates all frames.
* ``fixed_static``: z_f of one clip kept, z_1:T sampled from the prior (Fig. 7a, 11a): one clip per row.
* ``fixed_dynamic``: z_1:T of one clip kept, z_f ~ N(0, I) (Fig. 11b): one clip per row.
* ``samples``: unconditional samples, z_f ~ N(0, I) and z_1:T ~ p(z_1:T) (Fig. 5);
* ``generation_figure``: Fig. 5 proper, the full model's samples above MoCoGAN's;
* ``motion_transfer_figure``: Fig. 4's panels: A, B, and A moved as B by each model, named on the left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from s3vae.model import S3VAE


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [0, 1] -> (..., H, W, 3) uint8."""
    a = (x.clamp(0, 1) * 255).round().byte().movedim(-3, -1).cpu().numpy()
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def _grid(cells: np.ndarray, pad: int = 2) -> np.ndarray:
    """cells (R, C, H, W, 3) -> one image with ``pad`` pixels of white between cells."""
    R, C, H, W, _ = cells.shape
    out = np.full((R * (H + pad) + pad, C * (W + pad) + pad, 3), 255, np.uint8)
    for r in range(R):
        for c in range(C):
            y, x = pad + r * (H + pad), pad + c * (W + pad)
            out[y:y + H, x:x + W] = cells[r, c]
    return out


def _scaled(img: np.ndarray, scale: int) -> Image.Image:
    im = Image.fromarray(img)
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)


def _save(img: np.ndarray, path: str | Path, scale: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _scaled(img, scale).save(path)


@torch.no_grad()
def swap_grid(model: S3VAE, static_clips: torch.Tensor, dynamic_clips: torch.Tensor) -> torch.Tensor:
    """Clips (R, T, ...) giving z_f and (C, T, ...) giving z_1:T -> generated clips (R, C, T, C, H, W)."""
    es, ed = model.encode(static_clips), model.encode(dynamic_clips)
    R, C = len(static_clips), len(dynamic_clips)
    zf = es["zf_mu"].repeat_interleave(C, 0)            # (R*C, Df): row i's static
    zt = ed["zt_mu"].repeat(R, 1, 1)                     # (R*C, T, Dt): column j's dynamics
    return model.decode(zf, zt).view(R, C, *dynamic_clips.shape[1:])


@torch.no_grad()
def write_figures(model: S3VAE, clips: torch.Tensor, out_dir: str | Path, n: int = 6, seed: int = 0,
                  scale: int = 2) -> list[Path]:
    """All four figures for ``clips`` (N >= 2n, T, C, H, W); returns the files written."""
    torch.manual_seed(seed)
    model.eval()
    out_dir = Path(out_dir)
    static, dynamic = clips[:n], clips[n:2 * n]
    T = clips.shape[1]
    written = []
    # swapping: header row = z_1:T sources, header column = z_f sources, one grid per frame t
    gen = swap_grid(model, static, dynamic)                                 # (n, n, T, C, H, W)
    cells = np.zeros((n + 1, n + 1, *_to_uint8(clips[0, 0]).shape), np.uint8)
    cells[0, 0] = 255
    frames = []
    for t in range(T):
        cells[0, 1:] = _to_uint8(dynamic[:, t])
        cells[1:, 0] = _to_uint8(static[:, t])
        cells[1:, 1:] = _to_uint8(gen[:, :, t])
        frames.append(_grid(cells))
    _save(frames[T // 2], out_dir / "swap.png", scale)
    gif = [_scaled(f, scale) for f in frames]
    gif[0].save(out_dir / "swap.gif", save_all=True, append_images=gif[1:], duration=150, loop=0)
    written += [out_dir / "swap.png", out_dir / "swap.gif"]
    enc = model.encode(clips[:1])
    # fixed z_f, sampled z_1:T (rows: samples; columns: time)
    zt = model.sample_zt(n, T)
    _save(_grid(_to_uint8(model.decode(enc["zf_mu"].expand(n, -1), zt))), out_dir / "fixed_static.png", scale)
    # fixed z_1:T, sampled z_f
    zf = torch.randn(n, model.cfg.z_f)
    _save(_grid(_to_uint8(model.decode(zf, enc["zt_mu"].expand(n, -1, -1)))), out_dir / "fixed_dynamic.png", scale)
    # unconditional samples
    _save(_grid(_to_uint8(model.decode(torch.randn(n, model.cfg.z_f), model.sample_zt(n, T)))),
          out_dir / "samples.png", scale)
    written += [out_dir / f"{k}.png" for k in ("fixed_static", "fixed_dynamic", "samples")]
    return written


@torch.no_grad()
def generation_figure(s3vae: S3VAE, mocogan, labels: dict[str, torch.Tensor], T: int, path: str | Path,
                      n: int = 4, seed: int = 0, scale: int = 2) -> Path:
    """Fig. 5: unconditional generation, S3VAE (z_f ~ N(0, I), z_1:T ~ p(z_1:T); top ``n`` rows) above
    MoCoGAN (its conditioning labels drawn from real test clips, ``labels``; bottom ``n`` rows), with a
    white row between them. Rows: clips; columns: time."""
    torch.manual_seed(seed)
    s3vae.eval()
    mocogan.eval()
    ours = _to_uint8(s3vae.decode(torch.randn(n, s3vae.cfg.z_f), s3vae.sample_zt(n, T)))
    theirs = _to_uint8(mocogan.generate({k: v[:n] for k, v in labels.items()}, n, T))
    gap = np.full((1, *ours.shape[1:]), 255, np.uint8)
    _save(_grid(np.concatenate([ours, gap, theirs])), path, scale)
    return Path(path)


@torch.no_grad()
def motion_transfer_figure(a: torch.Tensor, b: torch.Tensor, swaps: dict, path: str | Path, scale: int = 2) -> Path:
    """Fig. 4: one panel per pair (A, B) of clips (n, T, C, H, W): rows A (appearance), B (motion), then
    ``swap(A, B)`` for every named ``swaps`` entry (a callable: clips A, B -> generated clips); columns
    are frames; a white row between panels, the row names in a column on the left."""
    names = ["A (appearance)", "B (motion)", *swaps]
    videos = [a, b, *(swap(a, b) for swap in swaps.values())]
    rows, labels = [], []
    gap = np.full(_to_uint8(a[:1]).shape, 255, np.uint8)                    # a white row (1, T, H, W, 3)
    for i in range(len(a)):
        if i:
            rows.append(gap)
            labels.append("")
        rows += [_to_uint8(v[i:i + 1]) for v in videos]                     # (1, T, H, W, 3) each
        labels += names
    img = _scaled(_grid(np.concatenate(rows)), scale)
    label_w, pitch = 8 + 6 * max(map(len, names)), (a.shape[-2] + 2) * scale   # default font: ~6 px a letter
    out = Image.new("RGB", (label_w + img.width, img.height), "white")
    out.paste(img, (label_w, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        draw.text((4, 2 * scale + r * pitch + pitch // 2 - 6), text, fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return Path(path)
