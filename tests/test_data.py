"""HDF5 shards: round trip, atomic writes, lazy per-worker reading, clear errors."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from s3vae.data import ClipDataset, ShardError, atomic_h5, batch_of, create_frames, open_shard, write_attrs


def write_clip_shard(path, n=6, T=4, S=8, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, T, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, 9, n)
    with atomic_h5(path) as f:
        create_frames(f, frames)
        f.create_dataset("labels/action", data=labels)
        write_attrs(f, "test", {"n": n})
    return frames, labels


def test_round_trip_and_chunking(tmp_path):
    frames, labels = write_clip_shard(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["frames"].chunks == (1, 4, 8, 8, 3)          # one chunk = one clip
        assert f["frames"].dtype == np.uint8
        assert np.array_equal(f["frames"][()], frames)
        assert f.attrs["recipe"] == "test" and "torch" in f.attrs["versions"]
    ds = ClipDataset([tmp_path / "a.h5"])
    item = ds[2]
    assert item["frames"].shape == (4, 3, 8, 8)              # (T, C, H, W)
    assert torch.allclose(item["frames"], torch.from_numpy(frames[2]).permute(0, 3, 1, 2).float() / 255)
    assert int(item["action"]) == labels[2]


def test_several_shards_with_aligned_labels_preload_equals_lazy(tmp_path):
    write_clip_shard(tmp_path / "a.h5", n=3, seed=1)
    write_clip_shard(tmp_path / "b.h5", n=5, seed=2)
    for name, n in (("la.h5", 3), ("lb.h5", 5)):
        with atomic_h5(tmp_path / name) as f:
            f.create_dataset("flow_labels", data=np.arange(n * 3).reshape(n, 3, 1))
    shards = [tmp_path / "a.h5", tmp_path / "b.h5"]
    labels = {"flow_labels": [tmp_path / "la.h5", tmp_path / "lb.h5"]}
    lazy, mem = ClipDataset(shards, labels), ClipDataset(shards, labels, preload=True)
    assert len(lazy) == len(mem) == 8
    b1, b2 = batch_of(lazy, [0, 4, 7]), batch_of(mem, [0, 4, 7])
    for k in b1:
        assert torch.equal(b1[k], b2[k])
    assert b1["flow_labels"][1].flatten().tolist() == [3, 4, 5]  # row 1 of the second shard


def test_dataset_pickles_and_reads_in_worker_processes(tmp_path):
    write_clip_shard(tmp_path / "a.h5")
    ds = ClipDataset([tmp_path / "a.h5"])
    _ = ds[0]                                       # opens a handle in this process
    clone = pickle.loads(pickle.dumps(ds))          # handles are dropped, reopened lazily
    assert torch.equal(clone[1]["frames"], ds[1]["frames"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    assert sum(len(b["frames"]) for b in loader) == 6


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with atomic_h5(out) as f:
            f.create_dataset("frames", data=np.zeros(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_clear_errors(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        open_shard(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="bad.h5.*not a readable HDF5"):
        open_shard(bad)
    write_clip_shard(tmp_path / "a.h5", n=4)
    with atomic_h5(tmp_path / "l.h5") as f:
        f.create_dataset("flow_labels", data=np.zeros((3, 2, 1)))
    with pytest.raises(ShardError, match="l.h5.*3 rows"):
        ClipDataset([tmp_path / "a.h5"], {"flow_labels": [tmp_path / "l.h5"]})
    with pytest.raises(ShardError, match="missing dataset 'frames'"):
        ClipDataset([tmp_path / "l.h5"])
