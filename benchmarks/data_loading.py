"""Clip read throughput from HDF5 shards, beside what a training step consumes.

    python benchmarks/data_loading.py results/sprites/shards/train_*.h5 [--workers 0 2] [--batch 16]

Reads whole epochs' worth of random batches (lazy per-worker HDF5 reads, one chunk per clip) and
prints clips/s for each worker count, plus the in-RAM (preload) path. Compare with the training
step rate of benchmarks/train_step.py: a step consumes `batch` clips.
"""

from __future__ import annotations

import argparse
import time

import torch

from s3vae.data import ClipDataset
from s3vae.engine import batch_loader, epoch_batches


def clips_per_second(data: ClipDataset, batch: int, workers: int, n_batches: int) -> float:
    batches = epoch_batches(len(data), batch, torch.Generator().manual_seed(0))[:n_batches]
    loader = batch_loader(data, batches, workers)
    t0 = time.perf_counter()
    n = sum(len(b["frames"]) for b in loader)
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("shards", nargs="+")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    a = p.parse_args()
    torch.set_num_threads(1)
    lazy = ClipDataset(a.shards)
    x = lazy[0]["frames"]
    print(f"# {len(lazy)} clips of {tuple(x.shape)} (T, C, H, W) from {len(a.shards)} shard(s), batch {a.batch}")
    print("| reader | workers | clips/s | batches/s |")
    print("|---|---|---|---|")
    for w in a.workers:
        r = clips_per_second(lazy, a.batch, w, a.batches)
        print(f"| HDF5 lazy | {w} | {r:.0f} | {r / a.batch:.1f} |")
    t0 = time.perf_counter()
    mem = ClipDataset(a.shards, preload=True)
    load_s = time.perf_counter() - t0
    r = clips_per_second(mem, a.batch, 0, a.batches)
    print(f"| preloaded (load {load_s:.1f} s) | 0 | {r:.0f} | {r / a.batch:.1f} |")


if __name__ == "__main__":
    main()
