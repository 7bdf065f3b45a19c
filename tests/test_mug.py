"""The MUG recipe on a MUG-shaped tree built from the Megamind fixture video: layout, split, labels, errors."""

import os
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from s3vae.data import ShardError
from s3vae.datasets import mug
from s3vae.datasets.mug import (
    EXPRESSIONS,
    FaceDetector,
    build_shard,
    crop_resize,
    detect_face,
    detect_indices,
    haar_faces,
    read_image,
    read_video,
    scan,
    skipped_path,
    split_takes,
)

TAKE_LEN = 20  # frames per fake take: room for one 15-frame clip and a few start positions
SCALE = 3  # Megamind 720x528 -> 240x176: faces stay well above the Haar window


@pytest.fixture(scope="module")
def megamind() -> Path:
    value = os.environ.get("S3VAE_DATA_MIRROR")
    if not value or not (Path(value) / "faces" / "Megamind.avi").is_file():
        pytest.skip("S3VAE_DATA_MIRROR is not set to a folder with faces/Megamind.avi (.ci/run sets it)")
    return Path(value).resolve() / "faces" / "Megamind.avi"


@pytest.fixture(scope="module")
def video(megamind) -> np.ndarray:
    return read_video(megamind)


@pytest.fixture(scope="module")
def small(video) -> np.ndarray:
    """The fixture's frames downscaled, RGB (270, 176, 240, 3)."""
    h, w = video.shape[1] // SCALE, video.shape[2] // SCALE
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in video])


def write_frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i:04d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def write_avi(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (frames.shape[2], frames.shape[1]))
    assert w.isOpened()
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()


# subject folder (session layer for 010) -> takes; each take is 20 consecutive frames from `start`
TREE = {
    "001": {"anger/take000": 0, "anger/take001": 30, "happiness/take000": 100, "surprise/take000": 160,
            "neutral/take000": 200},
    "002": {"anger/take000": 40, "anger/take001": 110, "happiness/take000": 170, "surprise/take000.avi": 190,
            "neutral/take000": 120},
    "010/session1": {"anger/take000": 200, "anger/take002": 220, "happiness/take000": 10,
                     "surprise/take000": 130, "neutral/take001": 50},
}


@pytest.fixture(scope="module")
def tree(small, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mug") / "subjects3"
    for subject, takes in TREE.items():
        for rel, start in takes.items():
            frames = small[start:start + TAKE_LEN]
            if rel.endswith(".avi"):
                write_avi(root / subject / rel, frames)
            else:
                write_frames(root / subject / rel, frames)
    (root / ".DS_Store").write_bytes(b"ignored")
    return root


def read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {"frames": f["frames"][()], "expression": f["labels/expression"][()],
                "subject": f["labels/subject"][()], "take": [t.decode() for t in f["source/take"][()]],
                "start": f["source/start"][()], "attrs": dict(f.attrs)}


# ---------------------------------------------------------------- the fixture video and the face helpers

def test_read_video_gives_all_frames_rgb(megamind, video):
    assert video.shape == (270, 528, 720, 3) and video.dtype == np.uint8
    cap = cv2.VideoCapture(str(megamind))
    ok, bgr = cap.read()
    cap.release()
    assert ok and np.array_equal(video[0], bgr[..., ::-1])  # RGB, not OpenCV's BGR


def test_detect_face_on_the_middle_frame(video):
    frame = video[135]
    faces = haar_faces(frame)
    assert len(faces) == 1  # one frontal face; the other character is seen from behind
    x, y, w, h = faces[0]
    assert 150 <= w <= 210 and abs(x + w / 2 - 480) < 30 and abs(y + h / 2 - 246) < 30
    box = detect_face(frame)  # margin 0.1 per side, square, inside the image
    bx, by, side, side2 = box
    assert side == side2 == round(w * 1.2)
    assert abs(bx + side / 2 - (x + w / 2)) <= 1 and abs(by + side / 2 - (y + h / 2)) <= 1
    assert detect_face(frame, margin=0) == (x, y, w, h)
    assert detect_face(np.zeros_like(frame)) is None
    crop = crop_resize(video[130:140], box, 64)
    assert crop.shape == (10, 64, 64, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop[5], cv2.resize(frame[by:by + side, bx:bx + side], (64, 64),
                                              interpolation=cv2.INTER_AREA))


def test_both_detectors_find_the_face_on_the_fixture(video):
    frame = video[135]
    hx, hy, hw, hh = haar_faces(frame)[0]
    for name in ("mediapipe", "haar"):
        with FaceDetector(name) as det:
            faces = det(frame)
            assert faces.dtype == np.float64 and faces.shape[1] == 4 and len(det(np.zeros_like(frame))) == 0
            x, y, w, h = faces[np.argmax(faces[:, 2] * faces[:, 3])]
            # the same face: centres within a quarter of Haar's side; BlazeFace's box is the tighter one
            assert np.hypot(x + w / 2 - hx - hw / 2, y + h / 2 - hy - hh / 2) < hw / 4 and 0.6 * hw <= w <= hw
            assert det.params()["name"] == name
    assert FaceDetector("mediapipe").params()["version"]  # recorded in the shard
    with pytest.raises(ValueError, match="unknown face detector 'dlib'"):
        FaceDetector("dlib")


def test_detect_indices_spread_over_the_take():
    assert detect_indices(20, 16).tolist() == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19]
    assert detect_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert detect_indices(10, 16).tolist() == detect_indices(10, 0).tolist() == list(range(10))


class FakeDetector:
    """Stands in for FaceDetector: one box per frame, looked up by the frame's first pixel value."""

    name = "fake"

    def __init__(self, boxes):
        self.boxes = boxes

    def __call__(self, frame):
        box = self.boxes[int(frame[0, 0, 0])]
        return np.zeros((0, 4)) if box is None else np.array([box, (0, 0, 5, 5)], np.float64)  # + a small one


def test_take_box_is_the_median_over_frames_with_a_face():
    frames = [np.full((100, 200, 3), i, np.uint8) for i in range(6)]
    boxes = {0: (40, 20, 30, 30), 1: (42, 22, 30, 30), 2: None, 3: (44, 18, 34, 34), 4: (150, 60, 10, 10),
             5: (38, 24, 30, 30)}
    box, found = mug.take_box(frames, FakeDetector(boxes), margin=0)
    # median centre (57, 37) and size 30 over the five frames with a face: the outlier on frame 4 and the
    # small second face on every frame do not move it
    assert found == 5 and box == (42, 22, 30, 30)
    assert mug.take_box(frames, FakeDetector(boxes), margin=0.5) == ((27, 7, 60, 60), 5)
    assert mug.take_box(frames, FakeDetector(dict.fromkeys(range(6))), margin=0) == (None, 0)


def test_a_take_survives_frames_without_a_face(small, tmp_path):
    """Detection runs over the take: blank middle frames (where the old recipe looked) do not lose it; a
    take with a face on fewer than min_face_fraction of the frames checked is bad, named with the count."""
    frames = small[100:100 + TAKE_LEN].copy()
    frames[6:13] = 128  # 7 of the 20 frames (5 of the 16 checked) hold no face, the middle one among them
    root = tmp_path / "subjects3"
    write_frames(root / "001/anger/take000", frames)
    take = scan(root).takes[0]
    clips, starts, box = mug.take_clips(take)
    assert clips.shape == (1, 15, 64, 64, 3)
    _, _, box_clean = mug.take_clips(scan(good_tree(small, tmp_path / "clean")).takes[0])
    assert max(abs(a - b) for a, b in zip(box, box_clean)) <= box_clean[2] / 8, (box, box_clean)  # about the same
    with pytest.raises(ShardError, match=re.escape(f"{root / '001/anger/take000'}: face found on 11 of the 16 "
                                                   "frames checked (of 20); need 12 (min_face_fraction 0.75")):
        mug.take_clips(take, min_face_fraction=0.75)


def good_tree(small, folder: Path) -> Path:
    root = folder / "subjects3"
    write_frames(root / "001/anger/take000", small[100:100 + TAKE_LEN])
    return root


def test_haar_option_and_the_detector_recorded_in_the_shard(small, tmp_path):
    import json

    root = good_tree(small, tmp_path)
    crops = {}
    for name in ("mediapipe", "haar"):
        out = tmp_path / f"{name}.h5"
        assert build_shard(root, out, "train", face_detector=name) == 1
        d = read(out)
        params = json.loads(d["attrs"]["params"])
        assert params["face_detector"] == params["detector"]["name"] == name
        assert params["detect_frames"] == 16 and params["min_face_fraction"] == 0.5
        assert params["margin"] == mug.MARGINS[name]
        crops[name] = d["frames"][0].astype(float)
    # both margins crop about the same face region
    assert np.abs(crops["mediapipe"] - crops["haar"]).mean() < 40
    with pytest.raises(ValueError, match="unknown face_detector"):
        build_shard(root, tmp_path / "x.h5", "train", face_detector="dlib")
    assert not (tmp_path / "x.h5").exists()


def test_square_box_is_clamped_to_the_image():
    assert mug.square_box((0, 0, 50, 50), (100, 200), margin=0.1) == (0, 0, 60, 60)
    assert mug.square_box((180, 70, 40, 40), (100, 200), margin=0.5) == (120, 20, 80, 80)
    assert mug.square_box((10, 10, 90, 90), (100, 200), margin=0.5) == (5, 0, 100, 100)  # shrunk to fit


def test_read_video_rejects_bad_files(small, tmp_path):
    good = tmp_path / "good.avi"
    write_avi(good, small[:TAKE_LEN])
    assert read_video(good).shape == (TAKE_LEN, 176, 240, 3)
    data = good.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    (tmp_path / "junk.avi").write_bytes(b"not a video" * 50)
    (tmp_path / "empty.avi").write_bytes(b"")
    for name, why in (("cut.avi", "truncated"), ("junk.avi", "not a readable video"),
                      ("empty.avi", "not a readable video"), ("missing.avi", "video not found")):
        with pytest.raises(ShardError, match=f"{name}: {why}"):
            read_video(tmp_path / name)


def test_read_image_rejects_truncated_and_corrupt_jpegs(small, tmp_path):
    ok, buf = cv2.imencode(".jpg", small[0])
    data = buf.tobytes()
    (tmp_path / "a.jpg").write_bytes(data)
    assert np.array_equal(read_image(tmp_path / "a.jpg"), cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 100 + b"\xff\xd9")
    with pytest.raises(ShardError, match="cut.jpg: truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ShardError, match="junk.jpg: corrupt image"):
        read_image(tmp_path / "junk.jpg")


# ---------------------------------------------------------------- the recipe on a good tree

def test_scan_lists_takes_with_sessions_videos_and_neutral(tree):
    listing = scan(tree.parent)  # the folder holding subjects3/ works too
    assert listing.root == tree and listing.problems == []
    assert [t.rel for t in listing.takes] == sorted(f"{s}/{r}" for s, takes in TREE.items() for r in takes)
    assert sum(t.expression == "neutral" for t in listing.takes) == 3
    assert {t.subject for t in listing.takes} == {"001", "002", "010"}
    assert [t.rel for t in listing.takes if t.video] == ["002/surprise/take000.avi"]
    assert listing.subject_ids() == ["001", "002", "010"]
    kept = scan(tree, exclude=("*/neutral/*", "002/*"))
    assert [t.rel for t in kept.takes] == [t.rel for t in listing.expressive() if not t.rel.startswith("002/")]


def test_split_is_by_take_per_expression_and_seeded(tree):
    listing = scan(tree)
    train, test = split_takes(listing, "train"), split_takes(listing, "test")
    assert not {t.rel for t in train} & {t.rel for t in test}
    assert {t.rel for t in train} | {t.rel for t in test} == {t.rel for t in listing.expressive()}
    count = {e: (sum(t.expression == e for t in train), sum(t.expression == e for t in test)) for e in EXPRESSIONS}
    assert count["anger"] == (5, 1) and count["happiness"] == (2, 1) and count["surprise"] == (2, 1)  # 75/25
    other = split_takes(listing, "train", seed=1)
    assert [t.rel for t in split_takes(listing, "train")] == [t.rel for t in train]
    assert [t.rel for t in other] != [t.rel for t in train]  # a different seed, a different split


def test_build_both_splits_in_two_shards(tree, tmp_path):
    shards = {(split, s): tmp_path / split / f"{s:04d}.h5" for split in ("train", "test") for s in (0, 1)}
    n = {key: build_shard(tree, out, key[0], key[1], 2) for key, out in shards.items()}
    data = {key: read(out) for key, out in shards.items()}
    listing = scan(tree)
    by_rel = {t.rel: t for t in listing.takes}
    seen = {}
    for (split, s), d in data.items():
        assert d["frames"].shape == (n[split, s], 15, 64, 64, 3) and d["frames"].dtype == np.uint8
        assert d["attrs"]["split"] == split and d["attrs"]["recipe"] == "mug"
        assert d["attrs"]["label_classes"] == '{"expression": 6, "subject": 3}'
        assert d["attrs"]["subject_ids"] == '["001", "002", "010"]'
        assert skipped_path(shards[split, s]).read_text() == "path\treason\n"  # always written
        for rel, e, subj, start in zip(d["take"], d["expression"], d["subject"], d["start"]):
            take = by_rel[rel]
            assert EXPRESSIONS[e] == take.expression != "neutral"  # order anger, disgust, happiness, ...
            assert ["001", "002", "010"][subj] == take.subject
            assert 0 <= start <= TAKE_LEN - 15
            assert seen.setdefault(rel, (split, s)) == (split, s)  # every take in exactly one shard
        assert d["frames"].std() > 10  # real image content, not blank crops
    assert sorted(seen) == sorted(t.rel for t in listing.expressive())  # one clip per take, neutral dropped
    assert sum(n.values()) == 12 and n["train", 0] + n["train", 1] == 9
    assert {rel for rel, where in seen.items() if where[0] == "test"} == {t.rel for t in split_takes(listing, "test")}
    # deterministic: a rebuild is bit-identical
    again = tmp_path / "again.h5"
    build_shard(tree, again, "train", 1, 2)
    d2 = read(again)
    for k in ("frames", "expression", "subject", "start"):
        assert np.array_equal(d2[k], data["train", 1][k])
    assert d2["take"] == data["train", 1]["take"]
    # independent of the shard count: one shard holds the same clips as the two together
    build_shard(tree, tmp_path / "whole.h5", "train")
    whole = read(tmp_path / "whole.h5")
    parts = {}
    for d in (data["train", 0], data["train", 1]):
        parts.update({rel: (f, st) for rel, f, st in zip(d["take"], d["frames"], d["start"])})
    assert sorted(whole["take"]) == sorted(parts)
    for rel, f, st in zip(whole["take"], whole["frames"], whole["start"]):
        assert st == parts[rel][1] and np.array_equal(f, parts[rel][0])


def test_options_clip_count_stride_and_size(tree, tmp_path):
    out = tmp_path / "all.h5"
    n = build_shard(tree, out, "test", frame_size=32, frames=8, frame_step=2, clips_per_take=0, window_hop=3)
    d = read(out)
    # 20 frames, span (8-1)*2+1 = 15 -> starts 0, 3 (6 would need frame 20)
    assert n == 3 * 2 and d["frames"].shape == (6, 8, 32, 32, 3) and sorted(set(d["start"])) == [0, 3]
    with h5py.File(tmp_path / "all.h5") as f:
        assert '"frame_step": 2' in f.attrs["params"]


# ---------------------------------------------------------------- bad input

def good_take(small, root: Path, rel: str, start: int = 100, n: int = TAKE_LEN) -> Path:
    write_frames(root / rel, small[start:start + n])
    return root / rel


def corrupt_jpeg(small, root):
    cut = good_take(small, root, "001/anger/take001") / "img_0000.jpg"  # frame 0: always decoded
    cut.write_bytes(cut.read_bytes()[:500])
    return cut, "truncated JPEG"


def short_take(small, root):
    return good_take(small, root, "001/fear/take000", n=10), "take too short: 10 frames"


def no_face(small, root):
    write_frames(root / "001/sadness/take000", np.full((TAKE_LEN, 176, 240, 3), 128, np.uint8))
    return root / "001/sadness/take000", "face found on 0 of the 16 frames checked (of 20)"


def truncated_video(small, root):
    avi = root / "002/disgust/take000.avi"
    write_avi(avi, small[100:100 + TAKE_LEN])
    data = avi.read_bytes()
    avi.write_bytes(data[:len(data) // 2])
    return avi, "truncated or corrupt"


def unknown_expression(small, root):
    good_take(small, root, "002/joy/take000")
    return root / "002/joy", "unknown expression folder 'joy'"


def file_at_wrong_depth(small, root):
    (root / "002/surprise").mkdir(parents=True)
    cv2.imwrite(str(root / "002/surprise/img_0000.jpg"), small[0])
    return root / "002/surprise/img_0000.jpg", "file at take level"


BAD = (corrupt_jpeg, short_take, no_face, truncated_video, unknown_expression, file_at_wrong_depth)


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__)
def test_each_bad_input_raises_naming_the_path(small, tmp_path, make_bad):
    root = tmp_path / "subjects3"
    good_take(small, root, "001/anger/take000")
    path, why = make_bad(small, root)
    out = tmp_path / "out" / "0000.h5"
    with pytest.raises(ShardError, match="^" + re.escape(f"{path}: {why}")):
        build_shard(root, out, "train")  # every take of this tree is in train (1-2 takes per expression)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no .h5, .partial or skip list


def test_skip_bad_lists_everything_and_writes_the_rest(small, tmp_path, capsys):
    root = tmp_path / "subjects3"
    good_take(small, root, "001/anger/take000")
    bad = {str(p): why for p, why in (make_bad(small, root) for make_bad in BAD)}
    out = tmp_path / "out" / "0000.h5"
    with pytest.raises(ShardError, match="unknown expression folder"):  # without skip_bad: the first problem
        build_shard(root, out, "train")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    n = build_shard(root, out, "train", skip_bad=True)
    n_test = build_shard(root, tmp_path / "out" / "test.h5", "test", skip_bad=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["0000.h5", "0000.h5.skipped.tsv", "test.h5",
                                                            "test.h5.skipped.tsv"]
    rows = [line.split("\t") for line in skipped_path(out).read_text().splitlines()[1:]]
    rows += [line.split("\t") for line in (tmp_path / "out/test.h5.skipped.tsv").read_text().splitlines()[1:]]
    listed = {p: r for p, r in rows}
    assert set(listed) == set(bad)
    for path, why in bad.items():
        assert why in listed[path]
    assert n + n_test == 1 and read(out)["take"] + read(tmp_path / "out/test.h5")["take"] == ["001/anger/take000"]
    assert "skipped" in capsys.readouterr().out


def test_cli_reports_errors(tree, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"error: .*nowhere: MUG root folder does not exist"):
        mug.main([str(tmp_path / "nowhere"), str(tmp_path / "x.h5"), "--split", "train"])
    with pytest.raises(SystemExit, match="error: shard must be in"):
        mug.main([str(tree), str(tmp_path / "x.h5"), "--split", "train", "--shard", "2", "--n-shards", "2"])
    mug.main([str(tree), "--scan"])
    assert "15 takes, 3 subjects" in capsys.readouterr().out
    assert not (tmp_path / "x.h5").exists()
