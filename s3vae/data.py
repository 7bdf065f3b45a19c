"""HDF5 shards: the one place that writes and reads them.

Layout of a clip shard (one writer per file, written atomically):

    /frames              uint8 (N, T, H, W, C), chunks (1, T, H, W, C), lzf  -- read clip by clip
                         (audio: float32 (N, T, D) feature frames, e.g. 80-d log-mel, same chunking)
    /labels/<name>       int64 (N,) or (N, K)                                 -- ground truth
    attrs                recipe name, its parameters (JSON), package versions

Pseudo-label shards hold one dataset per signal, row-aligned with the clip shard they came from
(e.g. ``/flow_labels`` int64 (N, T-1, k)), plus the same kind of provenance attrs.

Readers open files lazily (once per DataLoader worker, never in ``__init__``) with HDF5's best-effort
locking: a file another process holds open for writing is refused, and shards on file systems without
locks (NFS, Lustre) can still be read; h5py handles are dropped on pickling. Writers build the whole file
in memory and rename it into place (``atomic_h5``), so a reader sees a shard complete or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
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


PARTIAL = ".partial"


def _no_space(e: BaseException) -> bool:
    """Whether an error is a full disk (h5py reports HDF5's errno 28 in its message, not in ``errno``)."""
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e) or "errno = 28" in str(e)


def disk_full_error(path: str | os.PathLike, detail: str) -> ShardError:
    folder = Path(path).parent
    return ShardError(f"{path}: no space left on device ({detail}); free space in {folder} (or move results/ "
                      f"to a larger disk) and rerun: the partial file was removed")


def check_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse a write of ``nbytes`` into ``path``'s folder when the disk has less free."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < nbytes:
        final = path.with_name(path.name.removesuffix(PARTIAL))
        raise disk_full_error(final, f"writing it needs about {nbytes / 2**20:.1f} MiB, "
                                     f"{free / 2**20:.1f} MiB are free")


WRITE_BLOCK = 4 << 20


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with plain system calls (a full disk is an OSError here, never a crash)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:WRITE_BLOCK]):]
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open ``path`` for writing; the file appears only complete, or not at all.

    The HDF5 file is built in memory (HDF5 itself never writes to the disk: a disk that fills under it
    can crash the process in its close), then written to ``<path>.partial`` with plain writes after a
    free-space check sized to the bytes to write, and renamed. A failure (bad input, an exception, a
    disk that fills at any moment) leaves no partial file; a full disk raises ShardError naming the file
    and the cause. A stale partial file of a killed run is removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PARTIAL)
    tmp.unlink(missing_ok=True)
    try:
        with h5py.File(tmp, "w", driver="core", backing_store=False) as f:
            yield f
            f.flush()
            image = f.id.get_file_image()
        check_free_space(tmp, len(image))
        _write_file(tmp, image)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # h5py raises either when a write fails
        if _no_space(e):
            raise disk_full_error(path, str(e).splitlines()[0] if str(e) else "ENOSPC") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


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


REBUILD = "rebuild it, e.g. snakemake --forcerun <the rule that wrote it> (build_<dataset>_shards)"
FINITE_CHECK_BYTES = 32 << 20  # float frames read at open to look for NaN/inf: all of a small shard, else a sample


def check_frames(path: str | os.PathLike, frames: h5py.Dataset) -> None:
    """Clip frames as the models read them: video uint8 (N, T, H, W, C), audio float32 (N, T, D), and finite
    in a sample of clips (every clip when they fit in FINITE_CHECK_BYTES)."""
    kinds = {5: ("video frames (N, T, H, W, C)", np.uint8), 3: ("audio features (N, T, D)", np.float32)}
    if frames.ndim not in kinds:
        raise ShardError(f"{path}: dataset 'frames' has shape {frames.shape} (rank {frames.ndim}); expected rank 5 "
                         f"(video frames, N x T x H x W x C) or rank 3 (audio features, N x T x D): {REBUILD}")
    what, dtype = kinds[frames.ndim]
    if frames.dtype != dtype:
        raise ShardError(f"{path}: dataset 'frames' holds {frames.dtype}, but {what} must be {np.dtype(dtype)}: "
                         f"{REBUILD}")
    n = frames.shape[0]
    if not n or not np.issubdtype(frames.dtype, np.floating):
        return
    k = min(n, max(2, FINITE_CHECK_BYTES // max(frames.nbytes // n, 1)))
    rows = np.unique(np.linspace(0, n - 1, k).round().astype(int))
    for start in range(0, len(rows), 256):
        block = rows[start:start + 256]
        contiguous = block[-1] - block[0] == len(block) - 1  # a slice reads faster than a list of rows
        try:
            data = frames[block[0]:block[-1] + 1] if contiguous else frames[block.tolist()]
        except OSError as e:
            raise ShardError(f"{path}: dataset 'frames' cannot be read ({e}); the file is damaged: {REBUILD}") from e
        check_finite(path, data, block)


def check_finite(path, clips: np.ndarray, rows) -> None:
    """Refuse clips (their shard ``rows``) holding NaN or inf, naming the first such clip."""
    bad = ~np.isfinite(clips.reshape(len(clips), -1)).all(axis=1)
    if bad.any():
        raise ShardError(f"{path}: dataset 'frames', clip {int(rows[bad.argmax()])} holds non-finite values "
                         f"(NaN or inf): {REBUILD}")


def open_shard(path: str | os.PathLike, required: Sequence[str] = ()) -> h5py.File:
    """Open a shard read-only, with a clear error naming the file when it is missing or broken; when
    ``frames`` is required, its dtype, rank and finiteness are checked (``check_frames``)."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard does not exist")
    try:
        f = h5py.File(path, "r", locking="best-effort")
    except OSError as e:
        if "lock" in str(e).lower():
            raise ShardError(f"{path}: another process holds it open for writing ({str(e).splitlines()[0]}); "
                             f"wait for that process (another Snakemake run in this folder?) and rerun") from e
        raise ShardError(f"{path}: not a readable HDF5 file ({e})") from e
    try:
        for key in required:
            if key not in f:
                raise ShardError(f"{path}: missing dataset '{key}'")
        if "frames" in required:
            check_frames(path, f["frames"])
    except BaseException:
        f.close()
        raise
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
                if k == "frames" and np.issubdtype(parts[k][-1].dtype, np.floating):
                    # open_shard samples a large shard's clips; read in full, every clip is checked here
                    check_finite(p, parts[k][-1], np.arange(len(parts[k][-1])))
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


class ClipDataset(torch.utils.data.Dataset):
    """Clips of one split from clip shards, plus optional row-aligned pseudo-label shards.

    Items are dicts: ``frames`` float32 (T, C, H, W) in [0, 1] (audio: (T, D) as stored), every
    ``labels/*`` array, and, when given, the pseudo-labels. ``preload=True`` reads everything into RAM
    once (the quick CPU configuration); otherwise each worker opens the shards lazily and reads one chunk per clip.
    Every shard's clips must have one shape (frames per clip and frame size); ``clip_shape``, where given, is
    the stored shape of a frame the model reads ((H, W, C) for video, (D,) for audio; ``expected`` says which
    setting asks for it): a shard of another shape is refused when opened, naming the file and both shapes.
    """

    def __init__(self, clip_shards: Sequence[str], label_shards: dict[str, Sequence[str]] | None = None,
                 preload: bool = False, clip_shape: tuple | None = None, expected: str = ""):
        self.clip_shards = [str(p) for p in clip_shards]
        self.label_shards = {k: [str(p) for p in v] for k, v in (label_shards or {}).items()}
        for key, paths in self.label_shards.items():
            if len(paths) != len(self.clip_shards):
                raise ShardError(f"{key}: {len(paths)} label shards for {len(self.clip_shards)} clip shards")
        # index: (shard, row) for every clip; label names from the first shard
        self.index: list[tuple[int, int]] = []
        self.label_names: list[str] = []
        first = None
        for s, p in enumerate(self.clip_shards):
            with open_shard(p, ["frames"]) as f:
                n, shape = f["frames"].shape[0], tuple(f["frames"].shape[1:])
                if clip_shape is not None and shape[1:] != tuple(clip_shape):
                    raise ShardError(f"{p}: dataset 'frames' holds frames of shape {shape[1:]}, but the model reads "
                                     f"{tuple(clip_shape)} ({expected or 'its config'}): the shard was built with "
                                     f"other settings; {REBUILD}, or set the model to the shard's size")
                if first is not None and shape != first[1]:
                    raise ShardError(f"{p}: dataset 'frames' holds clips of shape {shape} (frames, then frame "
                                     f"shape), but {first[0]} holds {first[1]}: the shards of one split were "
                                     f"built with different settings; {REBUILD}")
                first = first or (p, shape)
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

    def describe(self, indices: Sequence[int]) -> str:
        """Where clips come from: ``path`` rows ``[...]`` per shard, for messages about a batch."""
        rows: dict[str, list[int]] = {}
        for i in indices:
            s, r = self.index[int(i)]
            rows.setdefault(self.clip_shards[s], []).append(r)
        return "; ".join(f"{p} clips {sorted(r)}" for p, r in rows.items())

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
