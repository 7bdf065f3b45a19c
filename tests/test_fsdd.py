"""FSDD dialled numbers: fetch (mirror and zip download), shard layout, determinism, silence labels."""

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from s3vae.data import ClipDataset
from s3vae.datasets import audio, fsdd
from s3vae.datasets.fsdd import FSDDError, build_shard, fetch_recordings, verify_recordings


@pytest.fixture(scope="module")
def fsdd_mirror() -> Path:
    value = os.environ.get("S3VAE_DATA_MIRROR")
    if not value or not (Path(value) / "fsdd" / "recordings").is_dir():
        pytest.skip("S3VAE_DATA_MIRROR is not set to a folder with fsdd/recordings/ (.ci/run sets it)")
    return Path(value).resolve()


@pytest.fixture(scope="module")
def recordings(fsdd_mirror) -> Path:
    return fsdd_mirror / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def test_shard(recordings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdd") / "test.h5"
    build_shard(recordings, out, "test", 0, 1, n_utterances=18)
    return out


def test_fetch_from_mirror_verifies_and_repairs(fsdd_mirror, tmp_path):
    dest = fetch_recordings(tmp_path / "rec", fsdd_mirror)
    assert len(list(dest.glob("*.wav"))) == 3000 and not (tmp_path / "rec.partial").exists()
    (dest / "3_theo_7.wav").write_bytes((dest / "3_theo_8.wav").read_bytes())
    with pytest.raises(FSDDError, match="not FSDD v1.0.10"):
        verify_recordings(dest)
    (dest / "0_george_0.wav").unlink()
    with pytest.raises(FSDDError, match=r"1 of 3000 recordings missing \(e.g. 0_george_0.wav\)"):
        verify_recordings(dest)
    fetch_recordings(dest, fsdd_mirror)          # a broken copy is replaced
    verify_recordings(dest)
    with pytest.raises(FSDDError, match="no FSDD recordings in the data mirror"):
        fetch_recordings(tmp_path / "other", tmp_path)


def first_take_of(recordings, split="test", u=0) -> str:
    """The file name of the first digit take utterance ``u`` of ``split`` reads."""
    utt = fsdd.dial(fsdd.Recordings(recordings), split, u)
    return f"{utt.digits[0]}_{fsdd.SPEAKERS[utt.speaker]}_{utt.takes[0]}.wav"


def test_a_recording_damaged_after_the_fetch_is_named_when_a_shard_reads_it(fsdd_mirror, recordings, tmp_path):
    """libsndfile reads a cut-off wav without complaint (a shard then silently has fewer segments): the
    build checks each file it reads, its length against its header and its bytes against the record the
    fetch wrote."""
    dest = fetch_recordings(tmp_path / "rec", fsdd_mirror)
    assert fsdd.read_record(dest) is not None and (dest / fsdd.RECORD).read_text() == fsdd.tree_lines(dest)
    name = first_take_of(dest)
    whole = (dest / name).read_bytes()
    (dest / name).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FSDDError, match=rf"{name}: truncated"):
        build_shard(dest, tmp_path / "a.h5", "test", 0, 1, n_utterances=2)
    flipped = bytearray(whole)
    flipped[-2] ^= 0xFF                                    # a sample changed, the length kept
    (dest / name).write_bytes(bytes(flipped))
    with pytest.raises(FSDDError, match=rf"{name}: not FSDD v1.0.10's file"):
        build_shard(dest, tmp_path / "b.h5", "test", 0, 1, n_utterances=2)
    assert not list(tmp_path.glob("*.h5"))
    with pytest.raises(FSDDError, match=rf"{name}: truncated"):   # the mirror itself: length only
        build_shard(_mirror_with(recordings, tmp_path / "m", name, whole[:-100]) / "fsdd" / "recordings",
                    tmp_path / "c.h5", "test", 0, 1, n_utterances=2)


def _mirror_with(recordings, root, name, data):
    """A data mirror whose FSDD recordings are the real ones (links) but ``name``, which holds ``data``."""
    folder = root / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for f in recordings.glob("*.wav"):
        (folder / f.name).symlink_to(f)
    (folder / name).unlink()
    (folder / name).write_bytes(data)
    return root


def test_a_recording_cut_short_in_the_mirror_is_named_by_the_fetch(recordings, tmp_path):
    name = first_take_of(recordings)
    whole = (recordings / name).read_bytes()
    mirror = _mirror_with(recordings, tmp_path / "mirror", name, whole[: len(whole) - 1000])
    with pytest.raises(FSDDError, match=rf"{mirror}/fsdd/recordings/{name}: truncated"):
        fetch_recordings(tmp_path / "rec", mirror)
    assert not (tmp_path / "rec").exists() and not (tmp_path / "rec.partial").exists()


def test_download_path_reads_the_tag_zip(recordings, tmp_path, monkeypatch):
    """The real download code on a local copy of the upstream archive layout (file:// URL)."""
    monkeypatch.delenv("S3VAE_DATA_MIRROR", raising=False)
    archive = tmp_path / "v1.0.10.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("free-spoken-digit-dataset-1.0.10/README.md", "fsdd")
        for name in fsdd.expected_names():
            z.write(recordings / name, f"free-spoken-digit-dataset-1.0.10/recordings/{name}")
    dest = fetch_recordings(tmp_path / "rec", url=archive.as_uri())
    assert len(list(dest.glob("*.wav"))) == 3000
    small = tmp_path / "small.zip"
    with zipfile.ZipFile(small, "w") as z:
        z.write(recordings / "0_george_0.wav", "x/recordings/0_george_0.wav")
    with pytest.raises(FSDDError, match="2999 of 3000 recordings missing"):
        fetch_recordings(tmp_path / "bad", url=small.as_uri())
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    with pytest.raises(FSDDError, match="download failed"):
        fetch_recordings(tmp_path / "bad", url=(tmp_path / "nothere.zip").as_uri())


def test_shard_layout(test_shard):
    with h5py.File(test_shard, "r") as f:
        n = f["frames"].shape[0]
        assert f["frames"].dtype == np.float32 and f["frames"].shape == (n, 20, 80)
        assert f["waveforms"].dtype == np.float32 and f["waveforms"].shape == (n, 19 * 80 + 200)
        for key in ("labels/speaker", "labels/utterance", "segment"):
            assert f[key].dtype == np.int64 and f[key].shape == (n,)
        assert f["labels/step_digit"].shape == (n, 20) and f["utterance_digits"].shape == (n, 5)
        assert f.attrs["split"] == "test" and f.attrs["recipe"] == "fsdd-dialled"
        attrs = tuple(int(f.attrs[k]) for k in ("sample_rate", "win_length", "hop_length", "steps"))
        assert attrs == (8000, 200, 80, 20)
        utt, spk, seg = f["labels/utterance"][()], f["labels/speaker"][()], f["segment"][()]
        sd, digits = f["labels/step_digit"][()], f["utterance_digits"][()]
        frames = f["frames"][()]
    assert sorted(set(utt.tolist())) == list(range(18))
    assert np.array_equal(spk, utt % 6)                                  # speaker of utterance u is u mod 6
    assert 0.4 < np.abs(frames).mean() < 1.5                            # roughly standardised
    assert (sd == -1).mean() > 0.2 and (sd >= 0).mean() > 0.3           # pauses and speech
    for u in range(18):
        rows = np.flatnonzero(utt == u)
        assert np.array_equal(seg[rows], np.arange(len(rows)))
        steps = sd[rows].ravel()
        runs = [int(steps[i]) for i in range(len(steps)) if steps[i] >= 0 and (i == 0 or steps[i - 1] < 0)]
        seq = [d for d in digits[rows[0]] if d >= 0]
        assert 3 <= len(seq) <= 5 and runs == seq[:len(runs)]          # spoken in order; tail may be cut
    ds = ClipDataset([str(test_shard)])
    item = ds[0]
    assert item["frames"].shape == (20, 80) and item["step_digit"].shape == (20,)


def test_shards_do_not_depend_on_the_shard_count(recordings, test_shard, tmp_path):
    parts = [tmp_path / f"s{k}.h5" for k in range(3)]
    for k, p in enumerate(parts):
        build_shard(recordings, p, "test", k, 3, n_utterances=18)
    with h5py.File(test_shard, "r") as f:
        whole = {u: f["frames"][f["labels/utterance"][()] == u] for u in range(18)}
    for k, p in enumerate(parts):
        with h5py.File(p, "r") as f:
            utt = f["labels/utterance"][()]
            assert set(utt.tolist()) == set(range(k, 18, 3))
            for u in set(utt.tolist()):
                assert np.array_equal(f["frames"][utt == u], whole[u])


def test_splits_use_disjoint_takes(recordings):
    recs = fsdd.Recordings(recordings)
    train = {t for u in range(30) for t in fsdd.dial(recs, "train", u).takes}
    test = {t for u in range(30) for t in fsdd.dial(recs, "test", u).takes}
    assert test <= set(range(5)) and not train & set(range(5))


def test_missing_recordings_fail_cleanly(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(FSDDError, match="recording not found"):
        build_shard(tmp_path, out, "train", 0, 1, n_utterances=2)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_silence_labels_find_the_pauses(test_shard, tmp_path):
    from pseudolabels import silence

    out = tmp_path / "sil.h5"
    silence.main([str(test_shard), str(out), "--threshold-db", "-40"])
    with h5py.File(out, "r") as g, h5py.File(test_shard, "r") as f:
        labels, pause = g["silence_labels"][()], f["labels/step_digit"][()] < 0
        assert labels.dtype == np.int64 and labels.shape == pause.shape
        assert g.attrs["recipe"] == "silence-rms-db" and "librosa" in g.attrs["params"]
    agree = (labels.astype(bool) == pause).mean()
    assert agree > 0.9, agree
    assert labels[pause].mean() > 0.9 and (1 - labels[~pause]).mean() > 0.9


def test_silence_rms_is_aligned_with_feature_steps():
    """A 5 ms burst at samples 640..680 is loud exactly in the steps whose windows [80t, 80t+200) hold it."""
    from pseudolabels.silence import silence_db, step_rms

    sr, win, hop = 8000, 200, 80
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 1e-4, (1, 19 * hop + win)).astype(np.float32)
    wave[0, 640:680] = 0.5
    rms = step_rms(wave, win, hop, 20)
    level = silence_db(rms, np.zeros(1, int))
    assert rms.shape == (1, 20)
    assert np.flatnonzero(level[0] > -40).tolist() == [6, 7, 8]
    feats = audio.log_mel(wave[0], sr)
    assert feats.shape == (20, 80) and np.argmax(feats.mean(1)) == 7      # the Hann window centred on it
