"""Optical-flow pseudo-labels (paper §4.2, Fig. 3a).

For every pair of consecutive frames (x_{t-1}, x_t) of a clip we compute a dense optical flow,
split its magnitude map into a GxG grid, average the magnitude inside each cell, and take the
indices of the k cells with the largest mean motion (largest first) as the label of frame t.
A clip of T frames gets T-1 labels; frame 1 has none (its q(z_1 | x_1) has seen no motion), so the
DFP loss is applied to z_2..z_T. This keeps the label causal: q(z_t | x_<=t) sees both frames.

Backends (one label function, :func:`labels_from_flows`, for all of them):
  * ``farneback`` (default, OpenCV): lowest error on small moving sprites/digits in our
    measurements; ``dis`` (OpenCV DIS, medium preset) is the faster alternative. Per pair, on the CPU.
  * ``flownet2``: the paper's network (pure PyTorch, :mod:`pseudolabels.flownet2`), with the converted
    weights of NVIDIA flownet2-pytorch (research use only; not bundled: ``--checkpoint`` is required).
    All consecutive frame pairs of many clips run through the model in batches, on CUDA when present.
    Frames whose size is not a multiple of 64 are resized up to the next multiple (flow scaled back).

CLI:  python -m pseudolabels.flow CLIPS.h5 OUT.h5 --grid 3 --topk 1 --method farneback
      python -m pseudolabels.flow CLIPS.h5 OUT.h5 --method flownet2 \
          --checkpoint FlowNet2_checkpoint.pth.tar --arch FlowNet2 --device auto --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from s3vae.data import ShardError, atomic_h5, open_shard, write_attrs
from s3vae.utils import file_digest

METHODS = ("farneback", "dis", "flownet2")


def _gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 -> (H, W) uint8."""
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return frame.reshape(frame.shape[:2])


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Dense flow (H, W, 2) in pixels, (dx, dy), mapping ``prev`` onto ``nxt`` (OpenCV backends)."""
    a, b = _gray(prev), _gray(nxt)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9, iterations=3,
                                            poly_n=5, poly_sigma=1.1, flags=0)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None)
    if method == "flownet2":
        raise ValueError("method 'flownet2' needs a model: use pseudolabels.flownet2.flownet2_flow or "
                         "compute_shard(..., method='flownet2', checkpoint=...)")
    raise ValueError(f"unknown flow method {method!r}; choose from {METHODS}")


def grid_magnitude(flow: np.ndarray, grid: int) -> np.ndarray:
    """Mean flow magnitude in each cell of a grid x grid partition, row-major.

    ``flow`` (..., H, W, 2) -> (..., grid*grid); cells as ``np.array_split`` cuts the rows and columns.
    """
    flow = np.asarray(flow)
    if not np.issubdtype(flow.dtype, np.inexact):
        flow = flow.astype(np.float64)                   # as np.linalg.norm does
    h, w = flow.shape[-3:-1]
    fx, fy = flow[..., 0], flow[..., 1]
    # = np.linalg.norm(flow, axis=-1) bit for bit (the same multiplies, one add, sqrt), without numpy's
    # slow reduction over a length-2 axis (benchmarks/README.md)
    mag = np.sqrt(fx * fx + fy * fy)
    rows, cols = _split_slices(h, grid), _split_slices(w, grid)
    cells = [mag[..., r, c].mean(axis=(-2, -1)) for r in rows for c in cols]
    return np.stack(cells, -1).astype(np.float32)


def _split_slices(n: int, parts: int) -> list[slice]:
    """The contiguous pieces of range(n) that ``np.array_split`` makes, as slices."""
    sizes = [len(a) for a in np.array_split(np.arange(n), parts)]
    stops = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, stops)]


def topk_cells(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest cells, largest first (ties broken by the lower index)."""
    order = np.argsort(-magnitudes, axis=-1, kind="stable")
    return order[..., :k]


def _check_topk(grid: int, k: int) -> None:
    if not 1 <= k <= grid * grid:
        raise ValueError(f"topk must be in 1..{grid * grid}, got {k}")


def labels_from_flows(flows: np.ndarray, grid: int = 3, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The label function of every backend: flows (..., H, W, 2) -> top-k cells (..., k) int64 and grid
    magnitudes (..., G*G) float32."""
    _check_topk(grid, k)
    mags = grid_magnitude(flows, grid)
    return topk_cells(mags, k).astype(np.int64), mags


def clip_flow_labels(frames: np.ndarray, grid: int = 3, k: int = 1, method: str = "farneback"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one clip (T, H, W, C) with an OpenCV backend: top-k cells (T-1, k) int64 and grid
    magnitudes (T-1, G*G)."""
    _check_topk(grid, k)
    gray = [_gray(f) for f in frames]                    # each frame once, not once per pair it is in
    if method == "dis":
        # one DIS object per clip: calc() with no initial flow keeps no state between pairs (same flows
        # as a new object per pair, tested), and its buffers are reused
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flows = [dis.calc(gray[t - 1], gray[t], None) for t in range(1, len(gray))]
    else:
        flows = [optical_flow(gray[t - 1], gray[t], method) for t in range(1, len(gray))]
    return labels_from_flows(np.stack(flows), grid, k)


def flownet2_labels(frames, model, grid: int = 3, k: int = 1, batch_size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Labels of many clips (N, T, H, W, C) (array or h5py dataset) with a FlowNet2 model.

    Clips are read in groups of about ``batch_size`` pairs; all their consecutive pairs
    (x_{t-1}, x_t) run through the model as one batch. Returns (N, T-1, k) and (N, T-1, G*G).
    """
    from pseudolabels.flownet2 import flownet2_flow

    _check_topk(grid, k)
    n, t = frames.shape[:2]
    labels = np.zeros((n, t - 1, k), np.int64)
    mags = np.zeros((n, t - 1, grid * grid), np.float32)
    clips_per_step = max(1, batch_size // (t - 1))
    for i in range(0, n, clips_per_step):
        chunk = np.asarray(frames[i:i + clips_per_step])                   # (n_c, T, H, W, C)
        prev = chunk[:, :-1].reshape(-1, *chunk.shape[2:])
        nxt = chunk[:, 1:].reshape(-1, *chunk.shape[2:])
        flows = flownet2_flow(model, prev, nxt, batch_size=batch_size)      # (n_c * (T-1), H, W, 2)
        lab, mag = labels_from_flows(flows.reshape(len(chunk), t - 1, *flows.shape[1:]), grid, k)
        labels[i:i + len(chunk)], mags[i:i + len(chunk)] = lab, mag
    return labels, mags


def compute_shard(clips_path: str, out_path: str, grid: int = 3, k: int = 1, method: str = "farneback",
                  checkpoint: str | os.PathLike | None = None, arch: str = "FlowNet2", device: str = "auto",
                  batch_size: int = 64) -> int:
    """Flow labels for every clip of a clip shard, written row-aligned to ``out_path``.

    ``method="flownet2"`` needs ``checkpoint`` (a flownet2-pytorch checkpoint of class ``arch``); it runs
    on ``device`` ("auto": CUDA when present) in batches of ``batch_size`` frame pairs. The output attrs
    record the backend and, for FlowNet2, the arch, the checkpoint path, its size and its SHA-256.
    """
    if method not in METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose from {METHODS}")
    _check_topk(grid, k)
    params = {"source": str(clips_path), "grid": grid, "topk": k, "method": method}
    model = None
    if method == "flownet2":
        from pseudolabels.flownet2 import WEIGHTS_HELP, load_flownet2, normalize_arch

        if not checkpoint:                                     # None or "" (the config's unset value)
            raise FileNotFoundError("method 'flownet2' needs a checkpoint: set pseudolabels.flow.checkpoint "
                                    "(CLI: --checkpoint). " + WEIGHTS_HELP)
        model = load_flownet2(checkpoint, arch, device)        # fails early, before reading the shard
        ckpt = Path(checkpoint)
        params.update({"arch": normalize_arch(arch), "checkpoint": str(ckpt.resolve()),
                       "checkpoint_bytes": ckpt.stat().st_size, "checkpoint_sha256": file_digest(ckpt),
                       "device": str(next(model.parameters()).device), "batch_size": batch_size,
                       "resize": "bilinear up to the next multiple of 64, flow resized back and rescaled"})
    else:
        cv2.setNumThreads(1)
        params["opencv"] = cv2.__version__
    with open_shard(clips_path, ["frames"]) as f:
        frames = f["frames"]
        n, t = frames.shape[:2]
        if t < 2:
            raise ShardError(f"{clips_path}: clips have {t} frame(s); flow needs at least 2")
        if model is not None:
            labels, mags = flownet2_labels(frames, model, grid, k, batch_size)
        else:
            labels = np.zeros((n, t - 1, k), np.int64)
            mags = np.zeros((n, t - 1, grid * grid), np.float32)
            for i in range(n):
                labels[i], mags[i] = clip_flow_labels(frames[i], grid, k, method)
    with atomic_h5(out_path) as g:
        g.create_dataset("flow_labels", data=labels)
        g.create_dataset("flow_magnitude", data=mags.astype(np.float16))
        write_attrs(g, "flow-grid-topk", params)
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="optical-flow grid top-k pseudo-labels (S3VAE §4.2)")
    p.add_argument("clips", help="clip shard (HDF5 with /frames)")
    p.add_argument("out", help="output label shard")
    p.add_argument("--grid", type=int, default=3)
    p.add_argument("--topk", type=int, default=1)
    p.add_argument("--method", choices=METHODS, default="farneback")
    p.add_argument("--checkpoint", help="flownet2: flownet2-pytorch checkpoint (e.g. FlowNet2_checkpoint.pth.tar)")
    p.add_argument("--arch", default="FlowNet2",
                   help="flownet2: model class of the checkpoint (FlowNet2, FlowNet2C, FlowNet2S, FlowNet2SD, "
                        "FlowNet2CS, FlowNet2CSS; default FlowNet2)")
    p.add_argument("--device", default="auto", help="flownet2: auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64, help="flownet2: frame pairs per forward pass")
    a = p.parse_args(argv)
    if a.method == "flownet2" and not a.checkpoint:
        p.error("--method flownet2 needs --checkpoint")
    try:
        n = compute_shard(a.clips, a.out, a.grid, a.topk, a.method, checkpoint=a.checkpoint, arch=a.arch,
                          device=a.device, batch_size=a.batch_size)
    except (ShardError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {a.out}: flow labels of {n} clips")


if __name__ == "__main__":
    main()
