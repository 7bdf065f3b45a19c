"""Optical-flow pseudo-labels: sign and size of flow, grid magnitudes and top-k labels."""

import h5py
import numpy as np
import pytest

from pseudolabels.flow import clip_flow_labels, compute_shard, grid_magnitude, optical_flow, topk_cells
from s3vae.data import ShardError, atomic_h5, create_frames


def textured(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((h // 4, w // 4))
    return (np.kron(img, np.ones((4, 4))) * 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_known_shift_gives_flow_of_right_sign_and_size(method):
    a = textured()
    b = np.roll(a, shift=(0, 2), axis=(0, 1))          # content moves 2 px to the right
    flow = optical_flow(a, b, method)
    inner = flow[8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.5)
    assert abs(np.median(inner[..., 1])) < 0.5
    c = np.roll(a, shift=(-3, 0), axis=(0, 1))         # content moves 3 px up
    inner = optical_flow(a, c, method)[8:-8, 8:-8]
    assert np.median(inner[..., 1]) == pytest.approx(-3.0, abs=0.7)


def test_grid_magnitude_and_topk():
    flow = np.zeros((9, 9, 2), np.float32)
    flow[0:3, 6:9] = (3.0, 4.0)                        # |v| = 5 in the top-right cell (index 2)
    flow[6:9, 0:3, 0] = 1.0                            # |v| = 1 in the bottom-left cell (index 6)
    mags = grid_magnitude(flow, 3)
    assert mags.shape == (9,)
    assert mags[2] == pytest.approx(5.0) and mags[6] == pytest.approx(1.0) and mags[4] == 0
    assert topk_cells(mags, 2).tolist() == [2, 6]


def test_clip_labels_follow_the_moving_object():
    T, S = 4, 48
    frames = np.zeros((T, S, S, 3), np.uint8)
    patch = textured(12, 12, seed=3)
    for t in range(T):                                 # a patch moving right in the bottom-left cell
        frames[t, 34:46, 2 + 2 * t:14 + 2 * t] = patch[..., None]
    labels, mags = clip_flow_labels(frames, grid=3, k=1)
    assert labels.shape == (T - 1, 1) and mags.shape == (T - 1, 9)
    assert (labels[:, 0] == 6).all()


def test_shard_round_trip_and_short_clips(tmp_path):
    frames = np.stack([np.stack([np.roll(textured(32, 32, s), t, axis=1) for t in range(5)]) for s in range(3)])
    with atomic_h5(tmp_path / "c.h5") as f:
        create_frames(f, np.repeat(frames[..., None], 3, -1))
    assert compute_shard(tmp_path / "c.h5", tmp_path / "l.h5", grid=3, k=2) == 3
    with h5py.File(tmp_path / "l.h5") as f:
        assert f["flow_labels"].shape == (3, 4, 2)
        assert f.attrs["recipe"] == "flow-grid-topk"
    with atomic_h5(tmp_path / "one.h5") as f:
        create_frames(f, np.zeros((2, 1, 8, 8, 3), np.uint8))
    with pytest.raises(ShardError, match="one.h5.*at least 2"):
        compute_shard(tmp_path / "one.h5", tmp_path / "l1.h5")
    assert not (tmp_path / "l1.h5").exists()


def test_grid_magnitude_is_the_mean_of_the_euclidean_norm_bit_for_bit():
    rng = np.random.default_rng(1)
    for shape, dtype in (((5, 64, 64, 2), np.float32), ((3, 2, 31, 47, 2), np.float64), ((17, 9, 2), np.float32)):
        flow = (rng.standard_normal(shape) * 5).astype(dtype)
        mag = np.linalg.norm(flow, axis=-1)
        rows = np.array_split(np.arange(shape[-3]), 4)
        cols = np.array_split(np.arange(shape[-2]), 4)
        ref = np.stack([mag[..., r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(-2, -1)) for r in rows for c in cols],
                       -1).astype(np.float32)
        assert np.array_equal(grid_magnitude(flow, 4), ref)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_clip_labels_equal_a_fresh_flow_per_pair(method):
    """clip_flow_labels grays each frame once and reuses one DIS object per clip: same flows as the plain
    per-pair optical_flow (a new DIS object for every pair), bit for bit."""
    rng = np.random.default_rng(2)
    clips = [np.stack([np.roll(textured(64, 64, s), (int(rng.integers(-3, 4)) * t, t), axis=(0, 1))
                       for t in range(6)]) for s in range(3)]
    clips.append(rng.integers(0, 256, (5, 48, 40, 3), dtype=np.uint8))     # noise, colour, another size
    for frames in clips:
        if frames.ndim == 3:
            frames = np.repeat(frames[..., None], 3, -1)
        flows = np.stack([optical_flow(frames[t - 1], frames[t], method) for t in range(1, len(frames))])
        labels, mags = clip_flow_labels(frames, grid=3, k=2, method=method)
        assert np.array_equal(mags, grid_magnitude(flows, 3))
        assert np.array_equal(labels, topk_cells(grid_magnitude(flows, 3), 2))
