"""Landmark pseudo-labels: gap geometry, missing faces, FAN weights, and real speech on a fixture video."""

import os
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import skimage.data

from pseudolabels.landmarks import (
    IBUG68_INDICES,
    MEDIAPIPE_INDICES,
    SIGNALS,
    MissingWeightsError,
    compute_shard,
    eyelid_lip_gaps,
    fan_weight_files,
    fill_missing,
    load_fan,
    main,
    normalise_signals,
)
from s3vae.data import ShardError, atomic_h5, create_frames

# Megamind.avi (270 frames): shot cuts at frames 98, 154 and 200; 200-269 is a close-up of one
# character who listens with his mouth nearly closed (200-225), blinks (226-230), then speaks
# (238-269, mouth opening and closing); picked by viewing the frames.
SHOT = (200, 270)
QUIET, BLINK, SPEAKING = slice(0, 25), slice(26, 31), slice(38, 70)   # indices within the shot
STILL = 235                                                           # a middle frame of the shot


def write_clips(path, frames):
    with atomic_h5(path) as f:
        create_frames(f, np.ascontiguousarray(frames, dtype=np.uint8))
    return path


def face_crop(image, box, size=64, margin=1.4):
    """Square crop of ``margin`` x the detector box around its centre, resized to ``size``."""
    x, y, w, h = box
    cx, cy, s = x + w / 2, y + h / 2, max(w, h) * margin / 2
    x0, y0 = max(int(round(cx - s)), 0), max(int(round(cy - s)), 0)
    x1, y1 = min(int(round(cx + s)), image.shape[1]), min(int(round(cy + s)), image.shape[0])
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def haar_box(rgb):
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = cascade.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(60, 60))
    assert len(boxes), "Haar cascade found no face"
    return max(boxes, key=lambda b: b[2] * b[3])


@pytest.fixture(scope="module")
def astronaut_face():
    """A real face bundled with scikit-image, cropped like a MUG frame (64x64 RGB)."""
    img = skimage.data.astronaut()
    return face_crop(img, haar_box(img))


# ---------------------------------------------------------------------------------------- geometry

def ibug_face():
    """68 points: eye corners 10 px apart, known eyelid and lip gaps (image y down)."""
    p = np.zeros((68, 2))
    p[36], p[45] = (0, 0), (10, 0)                       # outer eye corners: unit = 10 px
    p[37], p[41], p[38], p[40] = (1, -1), (1, 1), (2, -1.5), (2, 1.5)      # gaps 2 and 3 -> 2.5
    p[43], p[47], p[44], p[46] = (8, -0.5), (8, 0.5), (9, -0.5), (9, 0.5)  # gaps 1 and 1 -> 1
    p[61], p[67], p[62], p[66], p[63], p[65] = (4, 9), (4, 10), (5, 8), (5, 12), (6, 9), (6, 10)
    return p                                             # lips: 1, 4, 1 -> 2


def test_gaps_of_known_points_and_invariance():
    p = ibug_face()
    np.testing.assert_allclose(eyelid_lip_gaps(p, "ibug68"), [0.25, 0.1, 0.2], rtol=1e-6)
    # scaling, rotating and shifting the face leaves the normalised gaps unchanged; batches work
    a = np.deg2rad(25)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = 3.7 * p @ rot.T + (40, -7)
    np.testing.assert_allclose(eyelid_lip_gaps(np.stack([p, moved, 0.2 * p]), "ibug68"),
                               np.tile([0.25, 0.1, 0.2], (3, 1)), rtol=1e-5)
    rng = np.random.default_rng(0)
    mesh = rng.random((5, 468, 3)) * 100
    g = eyelid_lip_gaps(mesh, "mediapipe")
    assert g.shape == (5, 3) and g.dtype == np.float32
    np.testing.assert_allclose(eyelid_lip_gaps(mesh[..., :2] * 0.31 + 5, "mediapipe"), g, rtol=1e-5)
    # the signals read the documented indices
    assert MEDIAPIPE_INDICES["eye_corners"] == (33, 263) and (159, 145) in MEDIAPIPE_INDICES["left_eye"]
    assert (13, 14) in MEDIAPIPE_INDICES["inner_lips"] and IBUG68_INDICES["eye_corners"] == (36, 45)
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        eyelid_lip_gaps(p, "dlib")


def test_fill_missing_and_normalise():
    g = np.array([[np.nan] * 3, [1, 2, 3], [np.nan] * 3, [3, 4, 5], [np.nan] * 3], np.float32)
    found = np.array([False, True, False, True, False])
    np.testing.assert_allclose(fill_missing(g, found), [[1, 2, 3], [1, 2, 3], [2, 3, 4], [3, 4, 5], [3, 4, 5]])
    with pytest.raises(ValueError):
        fill_missing(g, np.zeros(5, bool))
    rng = np.random.default_rng(1)
    gaps = (rng.normal([0.1, 0.1, 0.03], [0.01, 0.02, 0.03], (6, 8, 3))).astype(np.float32)
    gaps[2] = np.nan
    valid = np.ones(6, bool)
    valid[2] = False
    z, stats = normalise_signals(gaps, valid)
    np.testing.assert_allclose(z[valid].reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[valid].reshape(-1, 3).std(0), 1, atol=1e-4)
    assert np.isnan(z[2]).all()
    z2, _ = normalise_signals(gaps[:2], stats=stats)         # test split: training statistics
    np.testing.assert_allclose(z2, z[:2], rtol=1e-5)


# ----------------------------------------------------------------------------------- missing faces

def test_clip_without_face_fails_or_is_skipped(tmp_path, astronaut_face):
    gray = np.full((64, 64, 3), 128, np.uint8)
    clips = np.stack([
        np.stack([astronaut_face, gray, gray, astronaut_face]),     # faces at both ends: interpolated
        np.stack([gray] * 4),                                       # no face at all
    ])
    src = write_clips(tmp_path / "gray.h5", clips)
    with pytest.raises(ShardError, match=r"gray\.h5: clip 1: no face"):
        compute_shard(src, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(SystemExit, match=r"^error: .*gray\.h5: clip 1"):
        main([str(src), str(tmp_path / "out.h5")])
    assert list(tmp_path.iterdir()) == [src]                        # nothing half-written

    valid = compute_shard(src, tmp_path / "out.h5", skip_missing=True)
    assert valid.tolist() == [True, False]
    with h5py.File(tmp_path / "out.h5") as f:
        gaps, ok, found = f["landmark_gaps"][()], f["valid"][()], f["face_found"][()]
        assert f.attrs["recipe"] == "landmark-gaps"
        assert '"n_skipped": 1' in f.attrs["params"] and '"skipped": [1]' in f.attrs["params"]
        assert '"mediapipe": "0.10' in f.attrs["params"]
    assert gaps.shape == (2, 4, 3) and gaps.dtype == np.float32 and ok.tolist() == [True, False]
    assert found.tolist() == [[True, False, False, True], [False] * 4]
    assert np.isnan(gaps[1]).all() and np.isfinite(gaps[0]).all()
    np.testing.assert_allclose(gaps[0, 1:3], gaps[0, [0, 0]], rtol=1e-6)   # same face at both ends
    assert 0.02 < gaps[0, 0, 0] < 0.3 and 0.02 < gaps[0, 0, 1] < 0.3      # open eyes, plausible size


def test_audio_shard_is_rejected(tmp_path):
    src = write_clips(tmp_path / "a.h5", np.zeros((1, 4, 64, 64, 3), np.uint8))
    with h5py.File(src, "a") as f:
        del f["frames"]
        f["frames"] = np.zeros((1, 4, 80), np.float32)
    with pytest.raises(ShardError, match="a.h5.*uint8"):
        compute_shard(src, tmp_path / "o.h5")


# ------------------------------------------------------------------------------------------- FAN

def test_fan_missing_weights_names_directory_files_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    src = write_clips(tmp_path / "c.h5", np.zeros((1, 2, 64, 64, 3), np.uint8))
    folder = tmp_path / "th" / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as e:
        compute_shard(src, tmp_path / "o.h5", backend="fan")
    msg = str(e.value)
    assert str(folder) in msg and "s3fd-619a316812.pth" in msg and "2DFAN4-11f355bf06.pth.tar" in msg
    assert "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar" in msg
    assert not (tmp_path / "o.h5").exists() and not (folder / "2DFAN4-11f355bf06.pth.tar").exists()
    with pytest.raises(SystemExit, match=r"(?s)^error: face-alignment weights missing.*2DFAN4") as e:
        main([str(src), str(tmp_path / "o.h5"), "--backend", "fan", "--fan-detector", "full"])
    assert "s3fd" not in str(e.value)                               # the full-frame box needs no detector


def test_fan_loads_preplaced_weights(tmp_path, monkeypatch):
    """Randomly initialised weights of the package's own models, saved under the names it expects."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    folder = tmp_path / "th" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    assert set(fan_weight_files("sfd")) == {"s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar"}
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd().state_dict(), folder / "s3fd-619a316812.pth")
    start = time.perf_counter()
    fa = load_fan("cpu", "sfd")                                      # the real loading code, offline
    if time.perf_counter() - start > 20:
        pytest.skip("constructing FAN took over 20 s on this machine")
    assert type(fa.face_detector).__name__ == "SFDDetector" and not fa.flip_input
    assert not hasattr(fa.face_alignment_net, "_orig_mod")          # not wrapped by torch.compile
    # running it is left out: numba compiles face-alignment's heatmap decoding on the first frame
    # (5-20 s here), and random S3FD weights propose thousands of boxes


class FakeFAN:
    """Stands in for face_alignment.FaceAlignment: two faces, the larger one has known gaps."""

    def __init__(self):
        self.calls = []

    def get_landmarks_from_image(self, img, detected_faces=None, return_bboxes=False):
        self.calls.append((img.shape, detected_faces))
        if img.mean() < 10:                                          # a black frame: no face
            return None, None, None
        faces = detected_faces or [np.array([0, 0, 20, 20, 0.99]), np.array([5, 5, 60, 60, 0.9])]
        small = ibug_face() * 0.5
        small[[61, 67]] = (0, 0), (0, 10)                            # a different, wrong lip gap
        pts = [small, ibug_face() + 20] if detected_faces is None else [ibug_face()]
        return pts, None, faces


def test_fan_backend_reads_ibug_points_and_picks_the_largest_face(tmp_path, monkeypatch):
    import pseudolabels.landmarks as lm

    fake = FakeFAN()
    monkeypatch.setattr(lm, "load_fan", lambda device, detector: fake)
    frames = np.full((1, 3, 64, 64, 3), 200, np.uint8)
    frames[0, 1] = 0                                                 # no face: interpolated
    src = write_clips(tmp_path / "c.h5", frames)
    compute_shard(src, tmp_path / "o.h5", backend="fan", upscale=256)
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_allclose(f["landmark_gaps"][0], np.tile([0.25, 0.1, 0.2], (3, 1)), rtol=1e-5)
        assert f["face_found"][0].tolist() == [True, False, True]
    assert fake.calls[0] == ((256, 256, 3), None)                    # upscaled, S3FD detects
    fake.calls.clear()
    compute_shard(src, tmp_path / "o.h5", backend="fan", fan_detector="full")
    shape, boxes = fake.calls[0]
    assert shape == (64, 64, 3) and np.allclose(boxes, [[0, 0, 63, 63]])  # the whole frame is the box


# ----------------------------------------------------------------------------- real fixture video

@pytest.fixture(scope="module")
def megamind() -> Path:
    value = os.environ.get("S3VAE_DATA_MIRROR")
    if not value or not (Path(value) / "faces" / "Megamind.avi").is_file():
        pytest.skip("S3VAE_DATA_MIRROR is not set to a folder with faces/Megamind.avi (.ci/run sets it)")
    return Path(value) / "faces" / "Megamind.avi"


def test_mouth_signal_follows_speech_on_real_video(tmp_path, megamind):
    cap = cv2.VideoCapture(str(megamind))
    frames = []
    while len(frames) < SHOT[1]:
        ok, frame = cap.read()
        assert ok, f"{megamind}: could only read {len(frames)} frames"
        frames.append(frame)
    cap.release()
    shot = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames[SHOT[0]:SHOT[1]]]
    box = haar_box(shot[STILL - SHOT[0]])
    crops = np.stack([face_crop(f, box, size=64) for f in shot])         # MUG-sized crops
    still = np.repeat(crops[STILL - SHOT[0]][None], len(crops), axis=0)  # a static image sequence
    src = write_clips(tmp_path / "megamind.h5", np.stack([crops, still]))
    valid = compute_shard(src, tmp_path / "lm.h5")
    with h5py.File(tmp_path / "lm.h5") as f:
        gaps, found = f["landmark_gaps"][()], f["face_found"][()]
    assert valid.all() and found.all()
    lips, eyes = gaps[0, :, SIGNALS.index("inner_lips")], gaps[0, :, :2].mean(-1)
    speaking, quiet, static = lips[SPEAKING].std(), lips[QUIET].std(), gaps[1, :, 2].std()
    print(f"inner-lip gap std: speaking {speaking:.4f}, quiet {quiet:.4f}, static {static:.2e}; "
          f"eyes: blink min {eyes[BLINK].min():.3f}, median {np.median(eyes):.3f}")
    assert speaking > 0.015                       # the mouth opens and closes while he speaks
    assert speaking > 3 * quiet                   # ... much more than while he listens
    assert static < 1e-4 and speaking > 100 * static  # and a repeated frame gives one label
    assert eyes[BLINK].min() < 0.8 * np.median(eyes)  # the blink closes the eyelids
