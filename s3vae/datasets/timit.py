"""TIMIT (LDC93S1) for the paper's audio experiment (§5.2, App. E). Licensed: never downloaded.

Layout (LDC distribution; names upper or lower case):
``TIMIT/{TRAIN,TEST}/DR1..DR8/<SPEAKER>/<SENTENCE>.WAV`` with SPEAKER = sex (F/M) + 3 initials +
digit (e.g. FCJF0) and SENTENCE = SA1, SA2, SI###, SX### (10 per speaker, 630 speakers, 6300
utterances). The original ``.WAV`` files are NIST SPHERE (1024-byte text header, 16 kHz 16-bit PCM,
uncompressed); converted copies hold RIFF wavs (``SA1.WAV`` or ``SA1.WAV.wav`` next to the
original; when both exist the original name is used). ``read_audio`` reads both: SPHERE with the
small reader below (libsndfile also reads uncompressed SPHERE; the tests check the two agree),
RIFF with soundfile. Shorten-compressed SPHERE (other LDC corpora) is refused with a message.

Split. The paper: "We split the dataset to training and testing subsets with a ratio of 5:1". We
split BY SPEAKER (``split_mode="paper"``, default): speakers of both LDC folders are pooled, grouped
by (sex, dialect region), each group ordered by a seeded permutation, the groups concatenated
(sorted by sex then region) and every 6th speaker (positions 5, 11, ...) is test. Each speaker has
10 utterances, so utterances split 5:1 exactly as well (630 speakers -> 525 train / 105 test,
5250 / 1050 utterances), test speakers are unseen in training (the usual speaker-verification
protocol, as in FHVAE, whose features the paper follows) and both splits cover every sex/region.
``split_mode="official"`` uses the LDC TRAIN/TEST folders (462 / 168 speakers) instead.

Features (``audio.py``): 80-d log-mel, 25 ms Hann window, 10 ms hop, 512-point FFT, 20 Hz..8 kHz,
segments of 200 ms = 20 steps (App. E). A shard row = one segment; segments of an utterance are
in one shard, in order. Shard layout:

    /frames              float32 (N, 20, 80)  (ln mel power - feature_mean) / feature_std
    /labels/speaker      int64 (N,)           index into the sorted list of all scanned speakers
    /labels/utterance    int64 (N,)           index of the utterance in the split's sorted list
    /labels/sex          int64 (N,)           0 = F, 1 = M
    /labels/dialect      int64 (N,)           dialect region - 1 (0..7)
    /segment             int64 (N,)           position of the segment in its utterance
    /waveforms           float32 (N, 3440)    the segment's samples (19 * hop + win), for silence labels
    attrs                split, label_classes, sample_rate, win_length, hop_length, steps, recipe
                         "timit" and parameters (speaker names, the split's speakers)

``feature_mean``/``feature_std`` default to the FSDD constants: PROVISIONAL, not measured on TIMIT
(no copy here). Measure them with ``python -m s3vae.datasets.timit stats ROOT`` and pass them (config
``datasets.timit.feature_mean/std``); they must be the same for every shard.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3vae.data import ShardError, atomic_h5, create_frames, write_attrs
from s3vae.datasets import audio

SR = 16000
STEPS = audio.STEPS
TEST_EVERY = 6
SPLIT_MODES = ("paper", "official")
FEATURE_MEAN = -12.5  # provisional (FSDD's constants), see the module docstring
FEATURE_STD = 5.1
SPEAKER_RE = re.compile(r"^([FM])[A-Z]{3}\d$", re.IGNORECASE)
DIALECT_RE = re.compile(r"^DR([1-8])$", re.IGNORECASE)
SENTENCE_RE = re.compile(r"^(S[AIX]\d+)\.WAV(\.WAV)?$", re.IGNORECASE)
SPHERE_MAGIC = b"NIST_1A\n"


@dataclass(frozen=True)
class Utterance:
    path: Path
    speaker: str        # upper case, e.g. FCJF0
    sex: int            # 0 F, 1 M
    dialect: int        # 0..7
    sentence: str       # upper case, e.g. SX139
    folder: str         # "train" or "test": the LDC folder it came from


# --------------------------------------------------------------------------------------- audio

def parse_sphere_header(data: bytes, path: str | Path = "?") -> tuple[dict, int]:
    """Fields of a NIST SPHERE header and its size in bytes."""
    if not data.startswith(SPHERE_MAGIC):
        raise ShardError(f"{path}: not a NIST SPHERE file")
    try:
        size = int(data[8:16].split(b"\n")[0])
        lines = data[16:size].decode("ascii", "replace").splitlines()
    except ValueError as e:
        raise ShardError(f"{path}: corrupt SPHERE header ({e})") from e
    fields: dict = {}
    for line in lines:
        line = line.strip()
        if line == "end_head":
            return fields, size
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1].startswith("-"):
            name, kind, value = parts
            fields[name] = int(value) if kind == "-i" else float(value) if kind == "-r" else value
    raise ShardError(f"{path}: SPHERE header has no end_head within {size} bytes")


def read_sphere(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples (float32 in [-1, 1]) and rate of an uncompressed 16-bit mono NIST SPHERE file."""
    data = Path(path).read_bytes()
    h, size = parse_sphere_header(data, path)
    coding = str(h.get("sample_coding", "pcm"))
    if not coding.startswith("pcm") or "," in coding:
        raise ShardError(f"{path}: compressed SPHERE (sample_coding {coding}); decompress it first "
                         f"(e.g. sph2pipe -f wav)")
    if h.get("sample_n_bytes", 2) != 2 or h.get("channel_count", 1) != 1:
        raise ShardError(f"{path}: {h.get('channel_count')} channel(s) of {h.get('sample_n_bytes')} bytes; "
                         f"expected mono 16-bit")
    order = str(h.get("sample_byte_format", "01"))
    if order not in ("01", "10"):
        raise ShardError(f"{path}: unsupported sample_byte_format {order}")
    samples = np.frombuffer(data[size:], dtype="<i2" if order == "01" else ">i2")
    n = h.get("sample_count", len(samples))
    if len(samples) < n:
        raise ShardError(f"{path}: truncated ({len(samples)} of {n} samples)")
    return samples[:n].astype(np.float32) / 32768.0, int(h.get("sample_rate", SR))


def write_sphere(path: str | Path, samples: np.ndarray, sr: int = SR, byte_format: str = "01") -> None:
    """Write int16 mono samples as an uncompressed NIST SPHERE file (TIMIT's header fields)."""
    samples = np.asarray(samples, dtype=np.int16)
    fields = ["database_id -s5 TIMIT", "database_version -s3 1.0", "channel_count -i 1",
              f"sample_count -i {len(samples)}", f"sample_rate -i {sr}",
              f"sample_min -i {int(samples.min()) if len(samples) else 0}",
              f"sample_max -i {int(samples.max()) if len(samples) else 0}", "sample_n_bytes -i 2",
              f"sample_byte_format -s2 {byte_format}", "sample_sig_bits -i 16", "end_head"]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    Path(path).write_bytes(header + samples.astype("<i2" if byte_format == "01" else ">i2").tobytes())


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A SPHERE or RIFF (or anything libsndfile reads) mono file: float32 samples, rate."""
    import soundfile as sf

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise ShardError(f"{path}: cannot read ({e})") from e
    if head == SPHERE_MAGIC:
        return read_sphere(path)
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except RuntimeError as e:
        raise ShardError(f"{path}: not a readable SPHERE or RIFF wav ({e})") from e
    if wave.ndim != 1:
        raise ShardError(f"{path}: {wave.shape[1]} channels, expected mono")
    return wave, sr


# --------------------------------------------------------------------------------------- layout

def _child(directory: Path, name: str) -> Path | None:
    """The sub-folder of ``directory`` named ``name`` in any case."""
    for p in sorted(directory.iterdir()):
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def find_base(root: str | Path) -> Path:
    """The folder holding TRAIN/ and TEST/: ``root`` itself or a folder up to two levels below it."""
    root = Path(root)
    if not root.is_dir():
        raise ShardError(f"{root}: TIMIT root does not exist")
    levels = [[root]]
    for _ in range(2):
        levels.append([c for d in levels[-1] for c in sorted(d.iterdir()) if c.is_dir()])
    for level in levels:
        for d in level:
            if _child(d, "train") and _child(d, "test"):
                return d
    raise ShardError(f"{root}: no TRAIN/ and TEST/ folders found (expected the LDC layout "
                     f"TIMIT/{{TRAIN,TEST}}/DR1..DR8/<SPEAKER>/<SENTENCE>.WAV)")


def scan(root: str | Path) -> list[Utterance]:
    """Every utterance of a TIMIT copy, validated, sorted by (speaker, sentence)."""
    base = find_base(root)
    utts: list[Utterance] = []
    seen: dict[str, Path] = {}
    for folder in ("train", "test"):
        split_dir = _child(base, folder)
        dialects = [d for d in sorted(split_dir.iterdir()) if d.is_dir()]
        if not any(DIALECT_RE.match(d.name) for d in dialects):
            raise ShardError(f"{split_dir}: no dialect-region folders DR1..DR8")
        for dr in dialects:
            m = DIALECT_RE.match(dr.name)
            if not m:
                raise ShardError(f"{dr}: unexpected folder (dialect regions are DR1..DR8)")
            for spk in sorted(p for p in dr.iterdir() if p.is_dir()):
                sm = SPEAKER_RE.match(spk.name)
                if not sm:
                    raise ShardError(f"{spk}: not a TIMIT speaker folder (sex F/M, 3 letters, 1 digit, e.g. FCJF0)")
                sid = spk.name.upper()
                if sid in seen:
                    raise ShardError(f"{spk}: speaker {sid} also in {seen[sid]}")
                seen[sid] = spk
                files: dict[str, Path] = {}
                for f in sorted(spk.iterdir(), key=lambda p: (len(p.name), p.name)):
                    fm = SENTENCE_RE.match(f.name)
                    if fm and f.is_file():
                        files.setdefault(fm.group(1).upper(), f)   # SA1.WAV before SA1.WAV.wav
                if not files:
                    raise ShardError(f"{spk}: no <SENTENCE>.WAV files (e.g. SA1.WAV, SX139.WAV)")
                utts += [Utterance(files[s], sid, 0 if sm.group(1).upper() == "F" else 1, int(m.group(1)) - 1,
                                   s, folder) for s in sorted(files)]
    return sorted(utts, key=lambda u: (u.speaker, u.sentence))


def split_speakers(utts: list[Utterance], mode: str = "paper", seed: int = 0,
                   test_every: int = TEST_EVERY) -> dict[str, list[str]]:
    """Speaker ids of each split (sorted). See the module docstring."""
    info = {u.speaker: (u.sex, u.dialect, u.folder) for u in utts}
    if mode == "official":
        return {s: sorted(k for k, v in info.items() if v[2] == s) for s in ("train", "test")}
    if mode != "paper":
        raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {mode!r}")
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for group in sorted({v[:2] for v in info.values()}):
        members = sorted(k for k, v in info.items() if v[:2] == group)
        order += [members[i] for i in rng.permutation(len(members))]
    test = {s for i, s in enumerate(order) if i % test_every == test_every - 1}
    return {"train": sorted(set(order) - test), "test": sorted(test)}


def split_utterances(utts: list[Utterance], split: str, mode: str = "paper", seed: int = 0,
                     include_sa: bool = True) -> list[Utterance]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    speakers = set(split_speakers(utts, mode, seed)[split])
    return [u for u in utts if u.speaker in speakers and (include_sa or not u.sentence.startswith("SA"))]


def shard_utterances(split_utts: list[Utterance], shard: int, n_shards: int, n_utterances: int | None,
                     seed: int = 0) -> list[tuple[int, Utterance]]:
    """(utterance id, utterance) of one shard: an optional seeded subset of the split, round-robin."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    ids = np.arange(len(split_utts))
    if n_utterances is not None and n_utterances < len(ids):
        ids = np.sort(np.random.default_rng([seed, 1]).permutation(len(ids))[:n_utterances])
    return [(int(i), split_utts[i]) for i in ids[shard::n_shards]]


# --------------------------------------------------------------------------------------- shards

def build_shard(root: str | Path, out: str | Path, split: str, shard: int = 0, n_shards: int = 1,
                n_utterances: int | None = None, split_mode: str = "paper", seed: int = 0, include_sa: bool = True,
                feature_mean: float = FEATURE_MEAN, feature_std: float = FEATURE_STD) -> int:
    """Write one segment shard; returns the number of segments (rows)."""
    utts = scan(root)
    speakers = sorted({u.speaker for u in utts})
    spk_index = {s: i for i, s in enumerate(speakers)}
    split_utts = split_utterances(utts, split, split_mode, seed, include_sa)
    if not split_utts:
        raise ShardError(f"{root}: the {split} split is empty ({len(speakers)} speakers, mode {split_mode})")
    win, hop = audio.frame_params(SR)
    length = (STEPS - 1) * hop + win
    frames, waves, rows = [], [], []
    for uid, u in shard_utterances(split_utts, shard, n_shards, n_utterances, seed):
        wave, sr = read_audio(u.path)
        if sr != SR:
            raise ShardError(f"{u.path}: {sr} Hz, expected {SR}")
        feats, w = audio.utterance_segments(wave, SR, STEPS, feature_mean, feature_std)
        frames.append(feats)
        waves.append(w)
        rows += [(spk_index[u.speaker], uid, u.sex, u.dialect, k) for k in range(len(feats))]
    frames = np.concatenate(frames) if frames else np.zeros((0, STEPS, audio.N_MELS), np.float32)
    waves = np.concatenate(waves) if waves else np.zeros((0, length), np.float32)
    rows = np.asarray(rows, np.int64).reshape(-1, 5)
    with atomic_h5(out) as f:
        create_frames(f, frames)
        for k, name in enumerate(("speaker", "utterance", "sex", "dialect")):
            f.create_dataset(f"labels/{name}", data=rows[:, k])
        f.create_dataset("segment", data=rows[:, 4])
        f.create_dataset("waveforms", data=waves, chunks=(1, length) if len(waves) else None)
        f.attrs["split"] = split
        f.attrs["label_classes"] = json.dumps({"speaker": len(speakers), "sex": 2, "dialect": 8})
        audio.write_audio_attrs(f, SR, STEPS)
        write_attrs(f, "timit", {
            "split": split, "split_mode": split_mode, "seed": seed, "test_every": TEST_EVERY,
            "include_sa": include_sa, "shard": shard, "n_shards": n_shards, "n_utterances": n_utterances,
            "speakers": speakers, "split_speakers": sorted({u.speaker for u in split_utts}),
            "utterance": "index in the split's (speaker, sentence)-sorted list",
            **audio.feature_params(SR, STEPS, feature_mean, feature_std)})
    return len(frames)


def stats(root: str | Path, n_utterances: int = 500, split_mode: str = "paper", seed: int = 0) -> dict:
    """Scalar mean/std of the unstandardised log-mel of a seeded subset of train utterances."""
    train = split_utterances(scan(root), "train", split_mode, seed)
    chosen = shard_utterances(train, 0, 1, n_utterances, seed)

    def feats():
        for _, u in chosen:
            wave, sr = read_audio(u.path)
            yield audio.segments(audio.log_mel(wave, sr))
    return audio.feature_stats(feats())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("scan", help="validate a TIMIT copy and print its split sizes")
    c.add_argument("root")
    c.add_argument("--split-mode", choices=SPLIT_MODES, default="paper")
    b = sub.add_parser("build", help="write one HDF5 segment shard")
    b.add_argument("root", help="TIMIT copy (the folder with TRAIN/ and TEST/, or above it)")
    b.add_argument("out")
    b.add_argument("--split", choices=("train", "test"), required=True)
    b.add_argument("--shard", type=int, default=0)
    b.add_argument("--n-shards", type=int, default=1)
    b.add_argument("--n-utterances", type=int, default=None, help="seeded subset of the split's utterances")
    b.add_argument("--split-mode", choices=SPLIT_MODES, default="paper")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-sa", action="store_true", help="leave out the SA1/SA2 sentences")
    b.add_argument("--feature-mean", type=float, default=FEATURE_MEAN)
    b.add_argument("--feature-std", type=float, default=FEATURE_STD)
    s = sub.add_parser("stats", help="measure the log-mel mean/std of train utterances")
    s.add_argument("root")
    s.add_argument("--n-utterances", type=int, default=500)
    a = p.parse_args(argv)
    try:
        if a.cmd == "scan":
            utts = scan(a.root)
            sp = split_speakers(utts, a.split_mode)
            for name in ("train", "test"):
                n = sum(u.speaker in set(sp[name]) for u in utts)
                print(f"{name}: {len(sp[name])} speakers, {n} utterances")
        elif a.cmd == "stats":
            print(stats(a.root, a.n_utterances))
        else:
            n = build_shard(a.root, a.out, a.split, a.shard, a.n_shards, a.n_utterances, a.split_mode, a.seed,
                            not a.no_sa, a.feature_mean, a.feature_std)
            print(f"wrote {a.out}: {n} segments")
    except ShardError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
