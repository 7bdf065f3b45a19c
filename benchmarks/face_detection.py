"""Face detectors for the MUG crop box: detection rate and time per frame, and takes lost per recipe.

    python benchmarks/face_detection.py                          # the Megamind fixture only
    python benchmarks/face_detection.py --video carphone.mp4     # and any other face video

Videos: ``$S3VAE_DATA_MIRROR/faces/Megamind.avi`` (the fixture, also at 1/3 size as the tests use it)
and every ``--video``. Table 1, per video and detector (``s3vae.datasets.mug.FaceDetector``; mediapipe's
full-range model as an extra row): frames with at least one face, and wall time per frame (after one
warm-up frame, single process; the machine's other load perturbs it). Table 2: where BlazeFace's box
lies against Haar's (medians over the frames where both find a face).

Table 3, per video: a MUG-shaped tree of 2 subjects x 6 expressions x 2 takes, each take ``--take-len``
(20) consecutive frames starting at evenly spaced positions (takes overlap on short videos), written as
JPEG frame folders to a temporary folder, then built into train and test shards with ``skip_bad=True``.
Columns: takes skipped by the old recipe (Haar on the take's middle frame only; computed here, it is no
longer in the code), by the current recipe with ``face_detector: haar`` and with the default
(mediapipe); and, for the shards of either detector, the fraction of the 64x64 crops on which
mediapipe's face mesh (the landmark pseudo-label stage) finds a face.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

# benchmarks/pseudolabels.py would shadow the pseudolabels package: keep this folder off the path
sys.path[:] = [q for q in sys.path if Path(q or ".").resolve() != Path(__file__).resolve().parent]

from pseudolabels.landmarks import FaceLandmarker  # noqa: E402
from s3vae.datasets import mug  # noqa: E402

EXPRESSIONS = mug.EXPRESSIONS


class FullRange(mug.FaceDetector):
    """mediapipe's full-range model (model_selection=1), for the comparison only."""

    def __init__(self):
        super().__init__("mediapipe")
        import mediapipe as mp

        self._mp.close()
        self._mp = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                             min_detection_confidence=mug.MP_MIN_CONFIDENCE)


def detectors():
    return {"haar": lambda: mug.FaceDetector("haar"), "mediapipe (short range, default)":
            lambda: mug.FaceDetector("mediapipe"), "mediapipe full range": FullRange}


def rate_and_time(frames: np.ndarray, make) -> tuple[int, float]:
    with make() as det:
        det(frames[0])  # warm-up (graph start, cascade load)
        t0 = time.perf_counter()
        found = sum(len(det(f)) > 0 for f in frames)
        return found, (time.perf_counter() - t0) / len(frames) * 1e3


def box_agreement(frames: np.ndarray) -> tuple[int, float, float, float]:
    """Frames where both find a face; medians of BlazeFace's side / Haar's and of its centre's offset
    (x, y; + = right, down) in Haar sides, largest face of each."""
    rows = []
    with mug.FaceDetector("haar") as haar, mug.FaceDetector("mediapipe") as bf:
        for f in frames:
            h, b = haar(f), bf(f)
            if len(h) and len(b):
                h, b = (x[np.argmax(x[:, 2] * x[:, 3])] for x in (h, b))
                rows.append((b[2] / h[2], (b[0] + b[2] / 2 - h[0] - h[2] / 2) / h[2],
                             (b[1] + b[3] / 2 - h[1] - h[3] / 2) / h[2]))
    return (len(rows), *np.median(np.array(rows), axis=0)) if rows else (0, np.nan, np.nan, np.nan)


def write_tree(frames: np.ndarray, root: Path, take_len: int) -> list[str]:
    """2 subjects x 6 expressions x 2 takes of ``take_len`` frames; returns the takes' relative paths."""
    rels = [f"{s}/{e}/take{k:03d}" for s in ("001", "002") for e in EXPRESSIONS for k in range(2)]
    starts = np.round(np.linspace(0, len(frames) - take_len, len(rels))).astype(int)
    for rel, start in zip(rels, starts):
        (root / rel).mkdir(parents=True)
        for i, f in enumerate(frames[start:start + take_len]):
            cv2.imwrite(str(root / rel / f"img_{i:04d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return rels


def old_recipe_skips(root: Path, rels: list[str], take_len: int) -> int:
    """Takes the old recipe lost: no Haar face on the take's middle frame (index n // 2)."""
    return sum(len(mug.haar_faces(mug.read_image(root / rel / f"img_{take_len // 2:04d}.jpg"))) == 0
               for rel in rels)


def build_both(root: Path, out: Path, detector: str) -> tuple[int, list[Path]]:
    """Build train and test shards with skip_bad; the number of takes skipped and the shards."""
    skipped, shards = 0, []
    for split in ("train", "test"):
        shard = out / f"{detector}_{split}.h5"
        with contextlib.redirect_stdout(io.StringIO()):  # its "skipped k of n takes" line
            mug.build_shard(root, shard, split, skip_bad=True, face_detector=detector)
        skipped += len(mug.skipped_path(shard).read_text().splitlines()) - 1
        shards.append(shard)
    return skipped, shards


def mesh_rate(shards: list[Path]) -> tuple[int, int]:
    found = total = 0
    with FaceLandmarker("mediapipe") as lmk:
        for shard in shards:
            with h5py.File(shard, "r") as f:
                for clip in f["frames"][()]:
                    found += sum(lmk(frame) is not None for frame in clip)
                    total += len(clip)
    return found, total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--video", action="append", default=[], type=Path, help="another face video (repeatable)")
    p.add_argument("--take-len", type=int, default=20)
    a = p.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    videos: dict[str, np.ndarray] = {}
    mirror = os.environ.get("S3VAE_DATA_MIRROR")
    if mirror and (Path(mirror) / "faces/Megamind.avi").is_file():
        mm = mug.read_video(Path(mirror) / "faces/Megamind.avi")
        videos["Megamind.avi"] = mm
        h, w = mm.shape[1] // 3, mm.shape[2] // 3
        videos["Megamind.avi at 1/3"] = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in mm])
    for v in a.video:
        videos[v.name] = mug.read_video(v)
    if not videos:
        sys.exit("no video: set S3VAE_DATA_MIRROR (faces/Megamind.avi) or pass --video")

    print("| video | size | frames | detector | frames with a face | rate | ms per frame |")
    print("|---|---|---|---|---|---|---|")
    for name, frames in videos.items():
        for det, make in detectors().items():
            found, ms = rate_and_time(frames, make)
            print(f"| {name} | {frames.shape[2]}x{frames.shape[1]} | {len(frames)} | {det} | {found} | "
                  f"{found / len(frames):.0%} | {ms:.1f} |")

    print("\n| video | frames where both find a face | BlazeFace side / Haar side | centre offset x, y "
          "(Haar sides) |")
    print("|---|---|---|---|")
    for name, frames in videos.items():
        n, ratio, dx, dy = box_agreement(frames)
        print(f"| {name} | {n} | {ratio:.2f} | {dx:+.2f}, {dy:+.2f} |")

    print("\n| video | takes | skipped: old (Haar, middle frame) | skipped: haar, take-level | "
          "skipped: mediapipe, take-level (default) | face mesh, haar crops | face mesh, mediapipe crops |")
    print("|---|---|---|---|---|---|---|")
    for name, frames in videos.items():
        if name.endswith("at 1/3"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "subjects3"
            rels = write_tree(frames, root, a.take_len)
            n, old = len(rels), old_recipe_skips(root, rels, a.take_len)
            haar, haar_shards = build_both(root, Path(tmp) / "shards", "haar")
            mp, mp_shards = build_both(root, Path(tmp) / "shards", "mediapipe")
            mesh = [mesh_rate(shards) for shards in (haar_shards, mp_shards)]
        print(f"| {name} | {n} | {old} ({old / n:.0%}) | {haar} ({haar / n:.0%}) | {mp} ({mp / n:.0%}) | "
              + " | ".join(f"{found}/{total} ({found / max(total, 1):.0%})" for found, total in mesh) + " |")


if __name__ == "__main__":
    main()
