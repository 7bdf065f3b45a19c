"""Audio features and the TIMIT recipe on a TIMIT-shaped tree (SPHERE and RIFF files) built here."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from s3vae.data import ShardError
from s3vae.datasets import audio, timit
from s3vae.datasets.timit import Utterance, build_shard, read_audio, read_sphere, scan, split_speakers, write_sphere

SR = 16000


def speech(seed: int, f0: float, seconds: float = 0.5) -> np.ndarray:
    """A toy utterance: pause, three harmonic 'syllables' at the speaker's f0, pause (int16)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.12 * SR)) / SR
    parts = [rng.normal(0, 20, int(0.1 * SR))]
    for k in range(3):
        formant = rng.uniform(300, 3000)
        syl = sum(np.sin(2 * np.pi * f0 * h * t) / h * (1 + 3 * (abs(f0 * h - formant) < 300)) for h in range(1, 12))
        parts += [3000 * syl * np.hanning(len(t)), rng.normal(0, 20, int(0.03 * SR))]
    wave = np.concatenate(parts)
    wave = np.concatenate([wave, rng.normal(0, 20, max(0, int(seconds * SR) - len(wave)))])
    return np.clip(wave, -32768, 32767).astype(np.int16)


# (LDC folder, dialect, speaker, how its files are stored)
SPEAKERS = [("TRAIN", 1, "FCJF0", "sphere"), ("TRAIN", 1, "MDAB0", "sphere-be"), ("TRAIN", 1, "FDAW0", "riff"),
            ("TRAIN", 2, "MAEB0", "both"), ("TRAIN", 2, "FAEM0", "sphere"), ("TRAIN", 2, "MRCZ0", "sphere"),
            ("TRAIN", 3, "FSAH0", "riff"), ("TEST", 1, "MDAW1", "sphere"), ("TEST", 1, "FELC0", "sphere"),
            ("TEST", 3, "MABC0", "riff"), ("TEST", 3, "FPKT0", "both"), ("TEST", 4, "MJDH0", "sphere")]
SENTENCES = ("SA1", "SX139")


def make_tree(root: Path, lower: bool = False) -> Path:
    case = str.lower if lower else str
    for i, (folder, dr, spk, kind) in enumerate(SPEAKERS):
        d = root / case("TIMIT") / case(folder) / case(f"DR{dr}") / case(spk)
        d.mkdir(parents=True)
        for j, sent in enumerate(SENTENCES):
            wave = speech(10 * i + j, 100 + 15 * i)
            (d / case(f"{sent}.TXT")).write_text("0 1 text\n")
            if kind in ("sphere", "sphere-be", "both"):
                write_sphere(d / case(f"{sent}.WAV"), wave, byte_format="10" if kind == "sphere-be" else "01")
            if kind == "riff":
                sf.write(d / case(f"{sent}.WAV"), wave, SR, subtype="PCM_16")
            if kind == "both":        # a converted copy next to the original
                sf.write(d / f"{case(sent)}.{case('WAV')}.wav", wave.astype(np.float32) / 32768 * 0 + 0.1, SR)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("timit"))


def test_log_mel_matches_librosa_and_segments_align():
    import librosa

    x = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    ours = audio.log_mel(x, 8000, n_fft=256, win_ms=32)                  # win = n_fft: librosa frames agree
    ref = librosa.feature.melspectrogram(y=x, sr=8000, n_fft=256, hop_length=80, win_length=256, center=False,
                                         n_mels=80, fmin=20, fmax=4000)
    assert np.allclose(ours, np.log(np.maximum(ref, 1e-10)).T, atol=1e-4)
    feats = audio.log_mel(x, 8000)
    assert feats.dtype == np.float32 and feats.shape == (audio.n_steps(4000, 8000), 80) == (48, 80)
    seg = audio.segments(feats)
    assert seg.shape == (2, 20, 80) and np.array_equal(seg[1], feats[20:40])
    waves = audio.segment_waves(x, 8000, 2)
    assert waves.shape == (2, 1720) and np.array_equal(waves[1], x[1600:3320])
    assert np.allclose(audio.log_mel(waves[1], 8000), feats[20:40])        # a segment's samples give its steps
    assert audio.log_mel(np.zeros(100, np.float32), 16000).shape == (0, 80)


def test_sphere_reader_agrees_with_libsndfile(tmp_path):
    wave = speech(0, 120)
    for order in ("01", "10"):
        p = tmp_path / f"x{order}.WAV"
        write_sphere(p, wave, byte_format=order)
        ours, sr = read_sphere(p)
        theirs, sr2 = sf.read(str(p), dtype="float32")
        assert sr == sr2 == SR and np.array_equal(ours, theirs) and np.array_equal(ours, wave / 32768.0)
        assert np.array_equal(read_audio(p)[0], ours)
    comp = tmp_path / "shorten.WAV"
    data = (tmp_path / "x01.WAV").read_bytes().replace(b"sample_sig_bits -i 16\n",
                                                        b"sample_coding -s26 pcm,embedded-shorten-v2.00\n")
    comp.write_bytes(data)
    with pytest.raises(ShardError, match=r"shorten\.WAV: compressed SPHERE"):
        read_sphere(comp)
    junk = tmp_path / "junk.WAV"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(ShardError, match=r"junk\.WAV: not a readable SPHERE or RIFF"):
        read_audio(junk)


def test_scan_reads_both_formats_and_cases(tree, tmp_path):
    utts = scan(tree)
    assert len(utts) == 24 and len({u.speaker for u in utts}) == 12
    by = {(u.speaker, u.sentence): u for u in utts}
    assert by["MAEB0", "SA1"].path.name == "SA1.WAV"                      # original preferred over .WAV.wav
    assert by["FCJF0", "SX139"].sex == 0 and by["MJDH0", "SA1"].sex == 1 and by["MJDH0", "SA1"].dialect == 3
    assert by["MJDH0", "SA1"].folder == "test"
    lower = scan(make_tree(tmp_path / "lc", lower=True))
    assert [(u.speaker, u.sentence) for u in lower] == [(u.speaker, u.sentence) for u in utts]
    assert lower[0].path.name == "sa1.wav"
    w1, _ = read_audio(by["FDAW0", "SA1"].path)                           # RIFF under a .WAV name
    w2, _ = read_audio(by["FCJF0", "SA1"].path)                           # SPHERE
    assert w1.dtype == w2.dtype == np.float32 and len(w1) == len(w2) == 8800     # 0.55 s


def test_scan_errors_name_the_problem(tree, tmp_path):
    with pytest.raises(ShardError, match="no TRAIN/ and TEST/ folders found"):
        scan(tmp_path)
    bad = tmp_path / "bad" / "TIMIT"
    (bad / "TRAIN" / "DR1" / "XYZ").mkdir(parents=True)
    (bad / "TEST" / "DR1").mkdir(parents=True)
    with pytest.raises(ShardError, match=r"XYZ: not a TIMIT speaker folder"):
        scan(tmp_path / "bad")
    (bad / "TRAIN" / "DR1" / "XYZ").rmdir()
    (bad / "TRAIN" / "DR1" / "FAKE0").mkdir()
    with pytest.raises(ShardError, match=r"FAKE0: no <SENTENCE>.WAV files"):
        scan(tmp_path / "bad")
    write_sphere(bad / "TRAIN" / "DR1" / "FAKE0" / "SA1.WAV", speech(1, 100))
    (bad / "TEST" / "DR1" / "FAKE0").mkdir()
    write_sphere(bad / "TEST" / "DR1" / "FAKE0" / "SA1.WAV", speech(1, 100))
    with pytest.raises(ShardError, match="speaker FAKE0 also in"):
        scan(tmp_path / "bad")
    shutil.rmtree(bad / "TEST" / "DR1" / "FAKE0")
    (bad / "TEST" / "DR9").mkdir()
    with pytest.raises(ShardError, match=r"DR9: unexpected folder"):
        scan(tmp_path / "bad")


def test_paper_split_is_5_to_1_by_speaker_and_stratified():
    rng = np.random.default_rng(0)
    utts, k = [], 0
    for dr in range(8):
        for sex in (0, 1):
            for _ in range(int(rng.integers(20, 60))):
                spk = f"{'FM'[sex]}ABC{k}"
                k += 1
                utts += [Utterance(Path("x"), spk, sex, dr, f"SX{s}", "train" if k % 4 else "test") for s in range(10)]
    n = k
    sp = split_speakers(utts, "paper", seed=0)
    assert len(sp["test"]) == n // 6 and len(sp["train"]) == n - n // 6 and not set(sp["train"]) & set(sp["test"])
    info = {u.speaker: (u.sex, u.dialect) for u in utts}
    assert {info[s] for s in sp["test"]} == set(info.values())           # every sex x region is in test
    assert split_speakers(utts, "paper", seed=0) == sp and split_speakers(utts, "paper", seed=1) != sp
    off = split_speakers(utts, "official")
    assert set(off["test"]) == {u.speaker for u in utts if u.folder == "test"}


def test_build_shards(tree, tmp_path):
    split = split_speakers(scan(tree))
    assert len(split["test"]) == 2 and len(split["train"]) == 10
    whole = tmp_path / "test.h5"
    n = build_shard(tree, whole, "test", 0, 1)
    with h5py.File(whole, "r") as f:
        assert f["frames"].dtype == np.float32 and f["frames"].shape == (n, 20, 80)
        assert f["waveforms"].shape == (n, 19 * 160 + 400)
        assert (f.attrs["sample_rate"], f.attrs["hop_length"], f.attrs["recipe"]) == (16000, 160, "timit")
        utt, spk = f["labels/utterance"][()], f["labels/speaker"][()]
        frames = f["frames"][()]
        assert n == 4 * 2 and np.array_equal(f["segment"][()], np.tile([0, 1], 4))   # 0.5 s -> 2 segments each
        assert sorted(set(utt.tolist())) == [0, 1, 2, 3] and len(set(spk.tolist())) == 2
    parts = [tmp_path / f"p{k}.h5" for k in range(2)]
    for k, p in enumerate(parts):
        build_shard(tree, p, "test", k, 2)
    with h5py.File(parts[0], "r") as a, h5py.File(parts[1], "r") as b:
        assert set(a["labels/utterance"][()].tolist()) == {0, 2}
        for g in (a, b):
            for u in set(g["labels/utterance"][()].tolist()):
                assert np.array_equal(g["frames"][g["labels/utterance"][()] == u], frames[utt == u])
    sub = tmp_path / "sub.h5"
    assert build_shard(tree, sub, "train", 0, 1, n_utterances=3, include_sa=False) == 3 * 2
    with h5py.File(sub, "r") as f:
        assert len(set(f["labels/utterance"][()].tolist())) == 3
    timit.main(["build", str(tree), str(tmp_path / "cli.h5"), "--split", "test", "--split-mode", "official"])
    with h5py.File(tmp_path / "cli.h5", "r") as f:
        assert len(set(f["labels/speaker"][()].tolist())) == 5
