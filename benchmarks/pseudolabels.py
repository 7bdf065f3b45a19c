"""Pseudo-label stage throughput on 64x64 clips, beside bare video decode and bare HDF5 read.

    python benchmarks/pseudolabels.py                 # 32 clips x 15 frames of Megamind face crops
    python benchmarks/pseudolabels.py --quick         # a smoke run (4 clips, one repeat)
    python benchmarks/pseudolabels.py --profile       # add where the time goes (cProfile, torch.profiler)

Clips: face crops of ``$S3VAE_DATA_MIRROR/faces/Megamind.avi`` (720x528, 270 frames; a Haar box from
each clip's middle frame, resized to 64x64 with area interpolation; not the MUG recipe's box),
written to a clip shard with ``s3vae.data`` (``atomic_h5`` + ``create_frames``: lzf, one chunk per clip).
Without the mirror (or ``--video``) the clips are synthetic moving textures and the decode reference
is a synthetic 720x528 MJPG video of the same length (say so in any result you record).

Rows (best of ``--repeats`` runs, 3 at most for the landmarks and ``--nn-repeats`` for FlowNet2; the
median beside it):
  * references: (a) ``cv2.VideoCapture`` decode of the full-size source video, frames/s; (b) reading
    every clip back from the clip shard (``open_shard``, one ``frames[i]`` per clip), frames/s;
  * flow backends as the stage runs them (``pseudolabels.flow.compute_shard`` on the shard: read, flow,
    labels, write), in frame pairs/s (a clip of T frames has T-1 pairs: one pair per new frame, so the
    ratios compare pairs/s with frames/s); FlowNet2-S and FlowNet2 with random weights saved as an
    official-layout checkpoint to a temporary folder (random weights cost exactly what real ones do)
    on the first ``--nn-clips`` clips; the stage time includes loading the model and hashing the
    checkpoint, as in the pipeline;
  * landmark backends: ``pseudolabels.landmarks.compute_shard`` (mediapipe; fan only when its weights
    are already in ``torch.hub.get_dir()/checkpoints``: nothing is downloaded), frames/s.
Each stage row has a naive per-pair / per-frame Python loop beside it (see the notes it prints) and the
fraction of its labels equal to the stage's; "CPU use" is process CPU time / wall time of the best run
(2 = both cores busy). "2x aim" is the issue's goal: the batched stage within 2x
of bare decode speed, i.e. stage rate >= 0.5 x the video-decode rate (also shown against the HDF5 read).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

# this file is named like the package it measures: keep `python benchmarks/pseudolabels.py` from importing itself
sys.path[:] = [q for q in sys.path if Path(q or ".").resolve() != Path(__file__).resolve().parent]

from pseudolabels import flow as flowmod  # noqa: E402
from pseudolabels import landmarks as lmmod  # noqa: E402
from pseudolabels.flownet2 import build_model, flownet2_flow, load_flownet2, normalize_arch  # noqa: E402
from s3vae.data import atomic_h5, create_frames, open_shard  # noqa: E402

GRID, TOPK = 3, 1


# --------------------------------------------------------------------------------------------- helpers

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


CPU_USE: dict[float, float] = {}  # wall time of a run -> process CPU time / wall time (cores busy)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """Wall times of ``repeats`` calls of ``fn`` and the last result (CPU use of each run in CPU_USE)."""
    times, out = [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        CPU_USE[dt] = (time.process_time() - c0) / dt
        times.append(dt)
    return times, out


@contextlib.contextmanager
def cv2_threads(n: int | None):
    """Run with cv2.setNumThreads(n) (None: as is) and restore the previous value afterwards."""
    old = cv2.getNumThreads()
    if n is not None:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(old)


@contextlib.contextmanager
def quiet_native():
    """Silence C++ log lines (mediapipe/absl/TFLite write to fd 2) for the duration."""
    with open(os.devnull, "w") as null:
        saved = os.dup(2)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# ------------------------------------------------------------------------------------------------ data

def textures(n: int, size: int, seed: int) -> np.ndarray:
    """n smooth random RGB textures (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    small = rng.random((n, size // 8, size // 8, 3)).astype(np.float32)
    out = np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def synthetic_clips(n: int, t: int, size: int, seed: int = 0) -> np.ndarray:
    """Moving textures: a background translating at one velocity and a patch moving at another."""
    rng = np.random.default_rng(seed)
    bgs, patches = textures(n, 2 * size, seed), textures(n, size // 4, seed + 1)
    clips = np.zeros((n, t, size, size, 3), np.uint8)
    for i in range(n):
        v, pv = rng.uniform(-1.5, 1.5, 2), rng.uniform(-2.5, 2.5, 2)
        p0 = rng.uniform(size // 4, size // 2, 2)
        for k in range(t):
            x, y = (np.array([size // 2, size // 2]) + v * k).round().astype(int)
            frame = bgs[i, y:y + size, x:x + size].copy()
            px, py = np.clip(p0 + pv * k, 0, size - size // 4).round().astype(int)
            frame[py:py + size // 4, px:px + size // 4] = patches[i]
            clips[i, k] = frame
    return clips


def synthetic_video(path: Path, frames: int = 270, w: int = 720, h: int = 528) -> Path:
    """A synthetic MJPG video the size of the Megamind fixture (the decode reference without the mirror)."""
    bg = textures(1, 2 * max(w, h), 7)[0]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, (w, h))
    for k in range(frames):
        vw.write(np.ascontiguousarray(bg[k % 100:k % 100 + h, k % 150:k % 150 + w]))
    vw.release()
    return path


def face_clips(video: np.ndarray, n: int, t: int, size: int) -> np.ndarray:
    """n clips of t frames, evenly spaced over the video (overlapping when the video is short), each
    cropped with the Haar box of its middle frame (the nearest frame with a face if that has none)."""
    from s3vae.datasets.mug import crop_resize, detect_face

    starts = np.linspace(0, len(video) - t, n).round().astype(int)
    clips, boxes = [], {}
    for s in starts:
        box = None
        for d in sorted(range(t), key=lambda k: abs(k - t // 2)):
            if s + d not in boxes:
                boxes[s + d] = detect_face(video[s + d])
            box = boxes[s + d]
            if box is not None:
                break
        if box is None:                          # no face anywhere in the clip: the full frame, squared
            side = min(video.shape[1:3])
            box = (0, 0, side, side)
        clips.append(crop_resize(video[s:s + t], box, size))
    return np.stack(clips)


def write_shard(path: Path, clips: np.ndarray) -> Path:
    with atomic_h5(path) as f:
        create_frames(f, clips)
    return path


# -------------------------------------------------------------------------------------- references

def decode_video(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def read_shard(path: Path) -> int:
    with open_shard(path, ["frames"]) as f:
        ds = f["frames"]
        n = 0
        for i in range(ds.shape[0]):
            n += len(ds[i])
    return n


# ------------------------------------------------------------------------------------ flow: naive

def naive_opencv(shard: Path, method: str, n_clips: int, reuse: bool = False) -> np.ndarray:
    """Per pair: read the two frames from the shard, gray both, make a flow object (DIS: unless
    ``reuse``), compute the flow into a fresh array and the label of that one pair. (n, T-1, k)."""
    with open_shard(shard, ["frames"]) as f:
        ds = f["frames"]
        n, t = min(n_clips, ds.shape[0]), ds.shape[1]
        labels = np.zeros((n, t - 1, TOPK), np.int64)
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if reuse else None
        for i in range(n):
            for k in range(1, t):
                a = cv2.cvtColor(ds[i, k - 1], cv2.COLOR_RGB2GRAY)
                b = cv2.cvtColor(ds[i, k], cv2.COLOR_RGB2GRAY)
                if method == "farneback":
                    fl = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9,
                                                      iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
                else:
                    fl = (dis or cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)).calc(a, b, None)
                labels[i, k - 1] = flowmod.labels_from_flows(fl, GRID, TOPK)[0]
    return labels


def pooled_opencv(shard: Path, method: str, workers: int) -> np.ndarray:
    """The stage's per-clip function (``clip_flow_labels``) over clips already in RAM (no shard read or
    write), in a thread pool of ``workers`` when > 1 (cv2 releases the GIL). Not what the stage does."""
    with open_shard(shard, ["frames"]) as f:
        clips = [f["frames"][i] for i in range(f["frames"].shape[0])]

    def one_clip(frames: np.ndarray) -> np.ndarray:
        return flowmod.clip_flow_labels(frames, GRID, TOPK, method)[0]

    if workers <= 1:
        return np.stack([one_clip(c) for c in clips])
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one_clip, clips)))


def naive_flownet2(shard: Path, model, n_pairs: int) -> np.ndarray:
    """Per pair: read the two frames, one forward pass (batch size 1), the label of that pair."""
    out = []
    with open_shard(shard, ["frames"]) as f:
        ds = f["frames"]
        t = ds.shape[1]
        for j in range(n_pairs):
            i, k = divmod(j, t - 1)
            fl = flownet2_flow(model, ds[i, k][None], ds[i, k + 1][None], batch_size=1)[0]
            out.append(flowmod.labels_from_flows(fl, GRID, TOPK)[0])
    return np.stack(out)


def stage_labels(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[key][()]


# ----------------------------------------------------------------------------------- landmarks: naive

def naive_landmarks(shard: Path, backend: str, n_frames: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: construct the landmarker (mediapipe: a new FaceMesh), detect, gaps, close."""
    gaps, found = [], []
    with open_shard(shard, ["frames"]) as f:
        ds = f["frames"]
        t = ds.shape[1]
        for j in range(n_frames):
            i, k = divmod(j, t)
            with lmmod.FaceLandmarker(backend, **kw) as lmk:
                pts = lmk(ds[i, k])
                g = lmmod.eyelid_lip_gaps(pts, lmk.scheme) if pts is not None else None
            ok = g is not None and bool(np.isfinite(g).all())
            gaps.append(g if ok else np.full(3, np.nan, np.float32))
            found.append(ok)
    return np.stack(gaps), np.array(found)


def pooled_landmarks(shard: Path, workers: int) -> np.ndarray:
    """``clip_gaps`` over clips in RAM, one mediapipe FaceLandmarker per worker thread, clips dealt
    round-robin (static-image mode, so the result does not depend on the split). Not what the stage does."""
    with open_shard(shard, ["frames"]) as f:
        clips = [f["frames"][i] for i in range(f["frames"].shape[0])]

    def work(j: int) -> list[np.ndarray]:
        with lmmod.FaceLandmarker("mediapipe") as lmk:
            return [lmmod.clip_gaps(c, lmk)[0] for c in clips[j::workers]]

    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(work, range(workers)))
    out = [None] * len(clips)
    for j, part in enumerate(parts):
        out[j::workers] = part
    return np.stack(out)


def landmark_agreement(out: Path, gaps: np.ndarray, found: np.ndarray) -> float:
    """Fraction of the naive frames whose found flag and (where found) gaps equal the stage's."""
    with h5py.File(out, "r") as f:
        sf = f["face_found"][()].reshape(-1)[:len(found)]
        sg = f["landmark_gaps"][()].reshape(-1, 3)[:len(found)]
    same = (sf == found) & (~found | np.isclose(sg, gaps, rtol=1e-5, atol=1e-6).all(-1))
    return float(same.mean())


# --------------------------------------------------------------------------------------------- table

class Table:
    def __init__(self, decode: float, hdf5: float):
        self.decode, self.hdf5 = decode, hdf5
        self.rows: list[str] = []

    def add(self, name: str, unit: str, items: int, times: list[float], naive: float | None = None,
            agree: str = "", aim: bool = True):
        best, med = items / min(times), items / statistics.median(times)
        speed = f"{best / naive:.1f}x" if naive else ""
        naive_s = f"{naive:.1f}" if naive else ""
        verdict = ("yes" if best >= 0.5 * self.decode else "**no**") if aim else ""
        verdict_h5 = ("yes" if best >= 0.5 * self.hdf5 else "no") if aim else ""
        self.rows.append(f"| {name} | {unit} | {items} | {best:.1f} | {med:.1f} | {naive_s} | {speed} | "
                         f"{self.hdf5 / best:.1f} | {self.decode / best:.2f} | {verdict} | {verdict_h5} | {agree} | "
                         f"{CPU_USE.get(min(times), float('nan')):.2f} |")
        print(self.rows[-1], flush=True)

    @staticmethod
    def header():
        print("| method | unit | items | best /s | median /s | naive loop /s | stage over naive | "
              "x slower than HDF5 read | x slower than decode | 2x aim (decode) | 2x aim (HDF5) | "
              "naive labels = stage | CPU use (cores) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)


def fmt_agree(a: np.ndarray, b: np.ndarray) -> str:
    return f"{100 * float(np.mean(a == b)):.0f} %"


# ---------------------------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 clips, 1 FlowNet clip, one repeat: a smoke run")
    p.add_argument("--video", help="source video (default $S3VAE_DATA_MIRROR/faces/Megamind.avi, else synthetic)")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--frames", type=int, default=15)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="runs of each cheap measurement (best and median)")
    p.add_argument("--nn-clips", type=int, default=8, help="clips for the FlowNet2 stages")
    p.add_argument("--nn-repeats", type=int, default=2)
    p.add_argument("--nn-naive-pairs", type=int, nargs=2, default=[16, 6], metavar=("S", "FULL"),
                   help="pairs of the batch-1 loop for FlowNet2-S and FlowNet2")
    p.add_argument("--archs", nargs="*", default=["FlowNet2S", "FlowNet2"])
    p.add_argument("--batch-size", type=int, default=64, help="FlowNet2 stage: pairs per forward pass")
    p.add_argument("--naive-frames", type=int, default=120, help="frames of the per-frame landmark loops")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.clips, a.repeats, a.nn_clips, a.nn_repeats, a.nn_naive_pairs, a.naive_frames = 4, 1, 1, 1, [2, 1], 15
    torch.set_num_threads(a.threads)
    cv2_default = cv2.getNumThreads()
    tmp = Path(tempfile.mkdtemp(prefix="bench_pseudolabels_"))
    try:
        run(a, tmp, cv2_default)
    finally:
        for q in sorted(tmp.rglob("*"), reverse=True):
            q.unlink() if q.is_file() else q.rmdir()
        tmp.rmdir()


def run(a, tmp: Path, cv2_default: int) -> None:
    mirror = os.environ.get("S3VAE_DATA_MIRROR")
    video = Path(a.video) if a.video else (Path(mirror) / "faces" / "Megamind.avi" if mirror else None)
    real = video is not None and video.is_file()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__} threads "
          f"{torch.get_num_threads()}, OpenCV {cv2.__version__} threads {cv2_default} "
          f"(the OpenCV flow stage sets 1), CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    if real:
        from s3vae.datasets.mug import read_video

        frames = read_video(video)
        t0 = time.perf_counter()
        clips = face_clips(frames, a.clips, a.frames, a.size)
        print(f"# source {video} ({frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames): {a.clips} clips x "
              f"{a.frames} frames of {a.size}x{a.size} face crops (Haar boxes, {time.perf_counter() - t0:.1f} s)")
        del frames
    else:
        video = synthetic_video(tmp / "synthetic.avi")
        clips = synthetic_clips(a.clips, a.frames, a.size)
        print(f"# no source video ($S3VAE_DATA_MIRROR unset): synthetic moving textures, {a.clips} clips x "
              f"{a.frames} frames of {a.size}x{a.size}; decode reference: synthetic 720x528 MJPG, 270 frames "
              f"(no faces: landmark rows time the detector on faceless frames)")
    shard = write_shard(tmp / "clips.h5", clips)
    nn_shard = write_shard(tmp / "clips_nn.h5", clips[:a.nn_clips])
    n, t = clips.shape[:2]
    pairs, nn_pairs = n * (t - 1), min(a.nn_clips, n) * (t - 1)

    # references
    times, n_dec = timed(lambda: decode_video(video), max(a.repeats, 2))
    decode = n_dec / min(times)
    times_h5, n_h5 = timed(lambda: read_shard(shard), max(a.repeats, 3))
    hdf5 = n_h5 / min(times_h5)
    tab = Table(decode, hdf5)
    print()
    Table.header()
    tab.add(f"(a) cv2.VideoCapture decode, full size ({video.name})", "frames", n_dec, times, aim=False)
    tab.add("(b) HDF5 clip shard read (lzf, one chunk per clip)", "frames", n_h5, times_h5, aim=False)

    # flow: OpenCV backends
    notes = []
    with cv2_threads(1):
        for method in ("farneback", "dis"):
            out = tmp / f"flow_{method}.h5"
            ts, _ = timed(lambda: flowmod.compute_shard(shard, out, GRID, TOPK, method), a.repeats)
            cv2.setNumThreads(1)                                    # the stage sets 1 anyway
            nts, nl = timed(lambda: naive_opencv(shard, method, n), a.repeats)
            agree = fmt_agree(nl, stage_labels(out, "flow_labels"))
            tab.add(f"flow {method}: stage (compute_shard)", "pairs", pairs, ts, pairs / min(nts), agree)
    one = write_shard(tmp / "one_pair.h5", clips[:1, :2])
    fixed, _ = timed(lambda: flowmod.compute_shard(one, tmp / "one_out.h5", GRID, TOPK, "farneback"), 3)
    cv2.setNumThreads(cv2_default)
    notes.append("naive OpenCV loop: per pair, two h5py reads, two cvtColor, a flow into a fresh array "
                 "(DIS: a new DISOpticalFlow object per pair; the stage makes one per clip) and the label of one "
                 f"pair; compute_shard's fixed cost (open, write, provenance attrs) {1e3 * min(fixed):.0f} ms")

    # flow: FlowNet2 with random weights
    for arch in a.archs:
        n_naive = a.nn_naive_pairs[0 if normalize_arch(arch) == "FlowNet2S" else 1]
        torch.manual_seed(0)
        model = build_model(arch)
        ckpt = tmp / f"{arch}_checkpoint.pth.tar"
        torch.save({"epoch": 0, "state_dict": model.state_dict(), "best_EPE": 1e10}, ckpt)
        model = None
        out = tmp / f"flow_{arch}.h5"
        t0 = time.perf_counter()
        model = load_flownet2(ckpt, arch, "cpu")
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        flowmod.file_digest(ckpt)
        t_hash = time.perf_counter() - t0
        ts, _ = timed(lambda: flowmod.compute_shard(nn_shard, out, GRID, TOPK, "flownet2", checkpoint=ckpt,
                                                    arch=arch, device="cpu", batch_size=a.batch_size),
                      a.nn_repeats)
        naive_pairs = min(n_naive, nn_pairs)
        naive_flownet2(nn_shard, model, 1)                           # warm-up (primitive creation for B=1)
        nts, nl = timed(lambda: naive_flownet2(nn_shard, model, naive_pairs), 1)
        agree = fmt_agree(nl, stage_labels(out, "flow_labels").reshape(-1, TOPK)[:naive_pairs])
        n_par = sum(q.numel() for q in model.parameters())
        tab.add(f"flow flownet2 {arch} (random weights, {n_par / 1e6:.0f} M params): stage, batch {a.batch_size}",
                "pairs", nn_pairs, ts, naive_pairs / min(nts), agree)
        net = nn_pairs / max(min(ts) - t_load - t_hash, 1e-9)
        notes.append(f"{arch}: checkpoint {ckpt.stat().st_size / 1e6:.0f} MB; of the stage time, load "
                     f"{t_load:.1f} s and SHA-256 {t_hash:.1f} s are fixed costs (without them "
                     f"~{net:.1f} pairs/s); naive loop = batch size 1, "
                     f"{naive_pairs} pairs, model loaded once (not timed)")
        model = None
        ckpt.unlink()

    # landmarks
    with quiet_native(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tmp / "lm_mediapipe.h5"
        ts, valid = timed(lambda: lmmod.compute_shard(shard, out, "mediapipe", skip_missing=True),
                          min(a.repeats, 3))
        n_naive = min(a.naive_frames, n * t)
        nts, (g, fnd) = timed(lambda: naive_landmarks(shard, "mediapipe", n_naive), 1)
        agree = f"{100 * landmark_agreement(out, g, fnd):.0f} %"
        with h5py.File(out, "r") as f:
            found = float(f["face_found"][()].mean())
    tab.add("landmarks mediapipe: stage (compute_shard, static images)", "frames", n * t, ts, n_naive / min(nts),
            agree)
    notes.append(f"mediapipe: faces found in {100 * found:.0f} % of the frames ({int((~valid).sum())} clips "
                 f"without any face, marked invalid); naive loop = a new FaceMesh (FaceLandmarker) per frame, "
                 f"{n_naive} frames")
    try:
        lmmod.check_fan_weights("full")
        fan_det = "sfd"
        try:
            lmmod.check_fan_weights("sfd")
        except lmmod.MissingWeightsError:
            fan_det = "full"
    except lmmod.MissingWeightsError:
        fan_det = None
    if fan_det is None:
        print("| landmarks fan | frames | | skipped: weights absent | | | | | | | | | |")
        notes.append(f"fan: skipped: weights absent ({Path(torch.hub.get_dir()) / 'checkpoints'}); nothing downloaded")
    else:
        out = tmp / "lm_fan.h5"
        fan_shard = write_shard(tmp / "clips_fan.h5", clips[:a.nn_clips])
        nf = min(a.nn_clips, n) * t
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts, _ = timed(lambda: lmmod.compute_shard(fan_shard, out, "fan", skip_missing=True,
                                                      fan_detector=fan_det), a.nn_repeats)
            n_naive = min(4, nf)
            nts, (g, fnd) = timed(lambda: naive_landmarks(fan_shard, "fan", n_naive, fan_detector=fan_det), 1)
        tab.add(f"landmarks fan ({fan_det}): stage (compute_shard)", "frames", nf, ts, n_naive / min(nts),
                f"{100 * landmark_agreement(out, g, fnd):.0f} %")
        notes.append(f"fan: detector {fan_det}, {nf} frames; naive loop = a new FaceAlignment per frame, "
                     f"{n_naive} frames")

    # variants: what else could be done (not what the stage does)
    print("\nVariants (not what the stages do):\n")
    Table.header()
    for method in ("farneback", "dis"):
        ref = stage_labels(tmp / f"flow_{method}.h5", "flow_labels")
        for threads in sorted({1, cv2_default}):
            with cv2_threads(threads):
                ts, lab = timed(lambda: pooled_opencv(shard, method, 1), a.repeats)
            tab.add(f"flow {method}: clip_flow_labels over clips in RAM, cv2.setNumThreads({threads})", "pairs",
                    pairs, ts, agree=fmt_agree(lab, ref))
        with cv2_threads(1):
            ts, lab = timed(lambda: pooled_opencv(shard, method, 2), a.repeats)
        tab.add(f"flow {method}: thread pool of 2 over clips, cv2 threads 1", "pairs", pairs, ts,
                agree=fmt_agree(lab, ref))
    with quiet_native(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts, _ = timed(lambda: lmmod.compute_shard(shard, tmp / "lm_track.h5", "mediapipe", skip_missing=True,
                                                  tracking=True), min(a.repeats, 3))
        tp, gp = timed(lambda: pooled_landmarks(shard, 2), min(a.repeats, 3))
    tab.add("landmarks mediapipe: stage with tracking=True (video mode)", "frames", n * t, ts)
    with h5py.File(tmp / "lm_mediapipe.h5", "r") as f:
        ref_found = f["face_found"][()]
        ref = np.where(ref_found[..., None], f["landmark_gaps"][()], np.nan)
    same = np.isclose(gp, ref, rtol=1e-5, atol=1e-6, equal_nan=True).all(-1)
    tab.add("landmarks mediapipe: thread pool of 2 over clips (a FaceMesh each)", "frames", n * t, tp,
            agree=f"{100 * same.mean():.0f} %")

    print("\nNotes:")
    for line in notes:
        print(f"- {line}")
    print(f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if a.profile:
        profile(shard, nn_shard, tmp, a)


def profile(shard: Path, nn_shard: Path, tmp: Path, a) -> None:
    print("\n## cProfile: flow farneback stage (compute_shard), top 10 by own time")
    pr = cProfile.Profile()
    pr.enable()
    flowmod.compute_shard(shard, tmp / "prof.h5", GRID, TOPK, "farneback")
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(10)
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:4000])
    from torch.profiler import profile as tprofile

    torch.manual_seed(0)
    model = build_model("FlowNet2S").eval()
    with open_shard(nn_shard, ["frames"]) as f:
        x = f["frames"][()]
    prev, nxt = x[:, :-1].reshape(-1, *x.shape[2:]), x[:, 1:].reshape(-1, *x.shape[2:])
    for bs, npair in ((1, 4), (a.batch_size, len(prev))):
        flownet2_flow(model, prev[:npair], nxt[:npair], batch_size=bs)    # warm-up
        with tprofile() as prof:
            t0 = time.perf_counter()
            flownet2_flow(model, prev[:npair], nxt[:npair], batch_size=bs)
            dt = time.perf_counter() - t0
        print(f"\n## torch.profiler: FlowNet2S, batch {bs}, {npair} pairs, {npair / dt:.1f} pairs/s")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


if __name__ == "__main__":
    main()
