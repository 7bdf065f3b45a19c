"""HDF5 shards: the one place that writes and reads them.

Layout of a clip shard (one writer per file, written atomically):

    /frames              uint8 (N, T, H, W, C), chunks (1, T, H, W, C), lzf  -- read clip by clip
                         (audio: float32 (N, T, D) feature frames, e.g. 80-d log-mel, same chunking)
    /labels/<name>       int64 (N,) or (N, K)                                 -- ground truth
    attrs                recipe name, its parameters (JSON), package versions

Pseudo-label shards hold one dataset per signal, row-aligned with the clip shard they came from
(e.g. ``/flow_labels`` int64 (N, T-1, k)), plus the same kind of provenance attrs.

Readers open files lazily (once per DataLoader worker, never in ``__init__``) with
``locking=False`` so that shards on NFS/Lustre can be read; h5py handles are dropped on pickling.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch


class ShardError(ValueError):
    """A shard is missing, unreadable or does not have the expected layout (message names the file)."""


def provenance() -> dict:
    """Versions of what produced a file (Snakemake does not track code in imported packages)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("s3vae", "numpy", "h5py", "torch", "opencv-python-headless", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open ``path`` for writing via a temporary file that replaces it only on success.

    A failure (bad input, kill) leaves no half-written shard behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_attrs(f: h5py.File, recipe: str, params: dict) -> None:
    f.attrs["recipe"] = recipe
    f.attrs["params"] = json.dumps(params, sort_keys=True, default=str)
    f.attrs["versions"] = json.dumps(provenance(), sort_keys=True)


def create_frames(f: h5py.File, frames: np.ndarray) -> None:
    """Store clips, one chunk per clip: video uint8 (N, T, H, W, C) or audio features float32 (N, T, D)."""
    video = frames.dtype == np.uint8 and frames.ndim == 5
    audio = frames.dtype == np.float32 and frames.ndim == 3
    if not (video or audio):
        raise ShardError(f"{f.filename}: frames must be uint8 (N,T,H,W,C) or float32 (N,T,D), "
                         f"got {frames.dtype} {frames.shape}")
    chunks = (1, *frames.shape[1:]) if len(frames) else None
    f.create_dataset("frames", data=frames, chunks=chunks, compression="lzf" if len(frames) else None)


def open_shard(path: str | os.PathLike, required: Sequence[str] = ()) -> h5py.File:
    """Open a shard read-only, with a clear error naming the file when it is missing or broken."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard does not exist")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise ShardError(f"{path}: not a readable HDF5 file ({e})") from e
    for key in required:
        if key not in f:
            f.close()
            raise ShardError(f"{path}: missing dataset '{key}'")
    return f


def read_shards(paths: Sequence[str | os.PathLike], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read and concatenate ``keys`` from several row-aligned shards into memory."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for p in paths:
        with open_shard(p, keys) as f:
            for k in keys:
                try:
                    parts[k].append(f[k][()])
                except OSError as e:  # a damaged chunk (e.g. lzf "filter returned failure")
                    raise ShardError(f"{p}: '{k}' cannot be read ({e}); the file is damaged: rebuild it, e.g. "
                                     f"snakemake --forcerun <the rule that wrote it> (build_<dataset>_shards)") from e
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


class ClipDataset(torch.utils.data.Dataset):
    """Clips of one split from clip shards, plus optional row-aligned pseudo-label shards.

    Items are dicts: ``frames`` float32 (T, C, H, W) in [0, 1] (audio: (T, D) as stored), every
    ``labels/*`` array, and, when given, the pseudo-labels. ``preload=True`` reads everything into RAM
    once (the quick CPU configuration); otherwise each worker opens the shards lazily and reads one chunk per clip.
    """

    def __init__(self, clip_shards: Sequence[str], label_shards: dict[str, Sequence[str]] | None = None,
                 preload: bool = False):
        self.clip_shards = [str(p) for p in clip_shards]
        self.label_shards = {k: [str(p) for p in v] for k, v in (label_shards or {}).items()}
        for key, paths in self.label_shards.items():
            if len(paths) != len(self.clip_shards):
                raise ShardError(f"{key}: {len(paths)} label shards for {len(self.clip_shards)} clip shards")
        # index: (shard, row) for every clip; label names from the first shard
        self.index: list[tuple[int, int]] = []
        self.label_names: list[str] = []
        for s, p in enumerate(self.clip_shards):
            with open_shard(p, ["frames"]) as f:
                n = f["frames"].shape[0]
                if not self.label_names and "labels" in f:
                    self.label_names = sorted(f["labels"].keys())
            for key, paths in self.label_shards.items():
                with open_shard(paths[s], [key]) as g:
                    if g[key].shape[0] != n:
                        raise ShardError(f"{paths[s]}: '{key}' has {g[key].shape[0]} rows, {p} has {n} clips")
            self.index.extend((s, r) for r in range(n))
        self._files: dict[str, h5py.File] | None = None
        self._datasets: dict[tuple[str, str], h5py.Dataset] | None = None
        self._mem: dict[str, np.ndarray] | None = None
        if preload:
            keys = ["frames"] + [f"labels/{k}" for k in self.label_names]
            self._mem = read_shards(self.clip_shards, keys)
            for key, paths in self.label_shards.items():
                self._mem.update(read_shards(paths, [key]))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):  # h5py handles cannot be pickled: each worker reopens
        state = self.__dict__.copy()
        state["_files"] = state["_datasets"] = None
        return state

    def _dataset(self, path: str, key: str) -> h5py.Dataset:
        """The h5py dataset ``key`` of ``path``, opened once per process (lookups are not free)."""
        if self._files is None:
            self._files, self._datasets = {}, {}
        if (path, key) not in self._datasets:
            if path not in self._files:
                self._files[path] = open_shard(path)
            self._datasets[path, key] = self._files[path][key]
        return self._datasets[path, key]

    def _read(self, key: str, i: int) -> np.ndarray:
        if self._mem is not None:
            return self._mem[key][i]
        s, r = self.index[i]
        path = self.label_shards[key][s] if key in self.label_shards else self.clip_shards[s]
        try:
            return self._dataset(path, key)[r]
        except OSError as e:
            raise ShardError(f"{path}: row {r} of '{key}' cannot be read ({e}); the file is damaged: rebuild it, "
                             f"e.g. snakemake --forcerun <the rule that wrote it> (build_<dataset>_shards)") from e

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames = torch.from_numpy(np.ascontiguousarray(self._read("frames", i)))
        if frames.dtype == torch.uint8:  # video: (T,H,W,C) uint8 -> (T,C,H,W) float in [0, 1]
            item = {"frames": frames.permute(0, 3, 1, 2).float().div_(255.0)}
        else:  # audio feature frames (T, D), stored ready to use
            item = {"frames": frames.float()}
        for k in self.label_names:
            item[k] = torch.as_tensor(self._read(f"labels/{k}", i))
        for k in self.label_shards:
            item[k] = torch.as_tensor(self._read(k, i))
        return item

    def arrays(self, key: str) -> np.ndarray:
        """All rows of one dataset (``frames``, ``labels/x`` or a pseudo-label key) as one array."""
        if self._mem is not None:
            return self._mem[key]
        paths = self.label_shards.get(key, self.clip_shards)
        return read_shards(paths, [key])[key]


def batch_of(dataset: ClipDataset, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Collate items ``indices`` of a dataset into a batch (stacked tensors)."""
    items = [dataset[int(i)] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def index_batches(n: int, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
                  ) -> list[list[int]]:
    """Clip indices 0..n-1 in batches (the last one partial), in order or shuffled by ``generator``."""
    idx = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]
