"""Free Spoken Digit Dataset (FSDD v1.0.10) as "dialled numbers": an offline stand-in for TIMIT.

Source: github.com/Jakobovski/free-spoken-digit-dataset, tag v1.0.10 (commit 26eb9aa), CC BY-SA 4.0:
3000 wav files ``recordings/{digit}_{speaker}_{index}.wav``, 8 kHz mono 16-bit PCM, 6 speakers x
10 digits x 50 takes, trimmed to minimal leading/trailing silence.

A dialled number is one utterance of ONE speaker: ``digits`` (3..5) random digit takes joined by
random pauses (100..400 ms, also one before the first and one after the last digit), so every
utterance has real pauses for the silence pseudo-labels. Static factor = speaker, dynamic = the
spoken digits. Details:

* each take's residual leading/trailing silence is trimmed (``librosa.effects.trim``, windows
  more than ``trim_db`` = 40 dB below the take's loudest 25 ms window; FSDD's own trimming leaves
  up to ~100 ms of near-silence on some speakers' takes), so ``step_digit`` marks speech;
* a pause is a seeded Gaussian noise floor at ``noise_floor_db`` = -60 dB re the utterance's
  loudest 25 ms window (relative, because the speakers' recording levels differ by ~25 dB: a
  fixed -60 dBFS floor would sit only ~20 dB under the quietest speaker).

Everything about utterance ``u`` of a split is drawn from ``numpy.random.default_rng([seed,
split_code, u])`` and utterances are dealt to shards round-robin (``u = shard, shard + n_shards,
...``), so a shard's content does not depend on how many shards there are. The speaker of
utterance ``u`` is ``u mod 6`` (balanced).

Split: FSDD's official one, takes 0-4 of every (digit, speaker) are test (300 recordings), 5-49
train (2700). Both splits have all 6 speakers. The paper splits TIMIT 5:1 by speaker (unseen
speakers at test, see ``timit.py``); with only 6 speakers that would leave a single test speaker and
no different-speaker pairs, so for FSDD the verification EER is computed on pairs of test
utterances of the 6 seen speakers, built from takes never used in training.

Shard layout (one row = one 200 ms segment of 20 steps; all segments of an utterance are in the
same shard, in order):

    /frames              float32 (N, 20, 80)  standardised log-mel (see audio.py):
                                              (ln mel power - feature_mean) / feature_std
    /labels/speaker      int64 (N,)           0..5, index into SPEAKERS
    /labels/utterance    int64 (N,)           utterance id u within the split (unique per split)
    /labels/step_digit   int64 (N, 20)        digit spoken at each step (the centre of its 25 ms
                                              window lies inside a digit take), -1 in a pause
    /segment             int64 (N,)           position of the segment in its utterance
    /utterance_digits    int64 (N, 5)         the utterance's digit sequence, padded with -1
    /waveforms           float32 (N, 1720)    the segment's raw samples (19 * hop + win): what the
                                              silence stage measures (RMS over the same windows)
    attrs                split, label_classes {"speaker": 6}, sample_rate, win_length, hop_length,
                         steps, recipe "fsdd-dialled" and its parameters

Standardisation uses fixed constants (FEATURE_MEAN, FEATURE_STD: scalar mean and std of the
unstandardised log-mel of 300 train utterances with the default settings, ``stats`` subcommand), so
every shard is standardised identically without a pass over the other shards.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3vae.data import atomic_h5, create_frames, write_attrs
from s3vae.datasets import audio, resolve_mirror

UPSTREAM = "https://github.com/Jakobovski/free-spoken-digit-dataset"
TAG = "v1.0.10"
COMMIT = "26eb9aa"
ZIP_URL = f"{UPSTREAM}/archive/refs/tags/{TAG}.zip"
RAW_URL = f"https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/{TAG}/recordings/{{name}}"
# sha256 over the sorted lines "<file name> <sha256 of the file>\n" of the 3000 recordings of v1.0.10
TREE_SHA256 = "dbd573d7cafe79c4b49f65718115e1304e24e067fa39eff18a660dc6cb9c360f"
# Those lines, written beside the recordings by the fetch: each file a shard reads is checked against its line.
RECORD = "SHA256SUMS"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
N_DIGITS = 10
N_TAKES = 50
TEST_TAKES = tuple(range(5))
SR = 8000
SPLIT_CODE = {"train": 0, "test": 1}
DIGITS = (3, 5)
PAUSE_MS = (100.0, 400.0)
NOISE_FLOOR_DB = -60.0
TRIM_DB = 40.0
STEPS = audio.STEPS
MAX_DIGITS_STORED = DIGITS[1]
# the log-mel mean/std of the first 300 train utterances, from ``stats(source_dir)``
FEATURE_MEAN = -12.5
FEATURE_STD = 5.1
N_UTTERANCES = {"train": 1200, "test": 240}
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


class FSDDError(ValueError):
    """Recordings are missing, corrupt or not FSDD v1.0.10 (the message names the file)."""


def expected_names() -> list[str]:
    return sorted(f"{d}_{s}_{i}.wav" for d in range(N_DIGITS) for s in SPEAKERS for i in range(N_TAKES))


def tree_lines(directory: str | Path) -> str:
    """The lines "<name> <sha256>\\n" of the 3000 recordings, sorted by name; their sha256 is the tree digest."""
    return "".join(f"{name} {hashlib.sha256((Path(directory) / name).read_bytes()).hexdigest()}\n"
                   for name in expected_names())


def tree_sha256(directory: str | Path) -> str:
    return hashlib.sha256(tree_lines(directory).encode()).hexdigest()


def read_record(directory: str | Path) -> dict[str, str] | None:
    """name -> sha256 from the folder's RECORD (written by the fetch), or None when it has none. The record
    is itself checked: its own sha256 is the v1.0.10 tree digest."""
    path = Path(directory) / RECORD
    if not path.is_file():
        return None
    text = path.read_text()
    if hashlib.sha256(text.encode()).hexdigest() != TREE_SHA256:
        raise FSDDError(f"{path}: not the record of FSDD {TAG} (changed after the fetch); fetch again")
    return dict(line.split(" ") for line in text.splitlines())


def check_wav_length(path: str | Path, data: bytes) -> None:
    """A wav whose RIFF header declares more (or fewer) bytes than the file holds was cut short (or
    appended to): libsndfile would read the samples that are there without a word."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FSDDError(f"{path}: not a RIFF/WAVE file")
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared != len(data):
        raise FSDDError(f"{path}: truncated or padded ({len(data)} bytes, its header declares {declared})")


def check_against_record(path: Path, data: bytes, record: dict[str, str]) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != record[path.name]:
        raise FSDDError(f"{path}: not FSDD {TAG}'s file (sha256 {got}, recorded {record[path.name]}); changed after "
                        f"the fetch: delete {path.parent} and fetch again")


def verify_recordings(directory: str | Path, digest: bool = True) -> Path:
    """Check a recordings folder: the 3000 expected names, each a whole (header length = file length),
    readable 8 kHz mono 16-bit wav, each equal to the folder's RECORD where it has one, and
    (``digest=True``) the v1.0.10 tree digest. Extra files are ignored. Raises FSDDError naming the file
    where one can be named."""
    import soundfile as sf

    directory = Path(directory)
    if not directory.is_dir():
        raise FSDDError(f"{directory}: recordings folder does not exist")
    missing = [n for n in expected_names() if not (directory / n).is_file()]
    if missing:
        raise FSDDError(f"{directory}: {len(missing)} of 3000 recordings missing (e.g. {missing[0]})")
    record = read_record(directory)
    for name in expected_names():
        path = directory / name
        data = path.read_bytes()
        check_wav_length(path, data)
        if record is not None:
            check_against_record(path, data, record)
        try:
            info = sf.info(str(path))
        except RuntimeError as e:
            raise FSDDError(f"{path}: not a readable wav ({e})") from e
        if (info.samplerate, info.channels, info.subtype) != (SR, 1, "PCM_16"):
            raise FSDDError(f"{path}: {info.samplerate} Hz, {info.channels} channel(s), "
                            f"{info.subtype}; expected 8000 Hz mono PCM_16")
    if digest and record is None:
        got = tree_sha256(directory)
        if got != TREE_SHA256:
            raise FSDDError(f"{directory}: recordings are not FSDD {TAG} (tree sha256 {got}, expected {TREE_SHA256}; "
                            f"every file is whole, so one differs in content)")
    return directory


def fetch_recordings(dest: str | Path, mirror: str | Path | None = None, timeout: float = 300.0,
                     url: str | None = None, digest: bool = True) -> Path:
    """Place the 3000 verified recordings in ``dest`` (the folder of wav files) and return it.

    From ``mirror/fsdd/recordings/`` when a data mirror is set (argument, else $S3VAE_DATA_MIRROR),
    else the tag's zip archive (``url`` overrides ``ZIP_URL``) is downloaded and its
    ``*/recordings/*.wav`` extracted. Files are staged in ``dest.partial`` and moved into ``dest``
    only once ``verify_recordings`` passes (the 3000 names, each whole and 8 kHz mono PCM_16, and the
    tree digest of v1.0.10 -- one sha256 over the per-file sha256s). Then ``dest/SHA256SUMS`` records
    the per-file sha256s (the lines the tree digest is computed over), so that a file changed later
    is named when a shard reads it. A ``dest`` that already verifies is kept as it is.
    """
    dest = Path(dest)
    if dest.is_dir():
        try:
            verify_recordings(dest, digest)
            if digest and read_record(dest) is None:
                (dest / RECORD).write_text(tree_lines(dest))
            return dest
        except FSDDError:
            pass
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        mirror = resolve_mirror(str(mirror) if mirror else None)
        if mirror is not None:
            src = mirror / "fsdd" / "recordings"
            if not src.is_dir():
                raise FSDDError(f"{src}: no FSDD recordings in the data mirror {mirror}")
            for name in expected_names():
                if (src / name).is_file():
                    data = (src / name).read_bytes()
                    check_wav_length(src / name, data)   # a damaged mirror file is named, not only the tree
                    (tmp / name).write_bytes(data)
        else:
            _download_zip(url or ZIP_URL, tmp, timeout)
        verify_recordings(tmp, digest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / RECORD).unlink(missing_ok=True)  # written last: a folder with a record is complete
        for name in expected_names():          # other files in dest are left alone
            (tmp / name).replace(dest / name)
        if digest:
            (dest / RECORD).write_text(tree_lines(dest))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _download_zip(url: str, into: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as td:
        archive = Path(td) / "fsdd.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as out:
                shutil.copyfileobj(r, out)
        except OSError as e:
            raise FSDDError(f"{url}: download failed ({e}); set a data mirror (S3VAE_DATA_MIRROR or "
                            f"config data_mirror) if this machine is offline") from e
        try:
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    parts = member.split("/")
                    if len(parts) >= 2 and parts[-2] == "recordings" and NAME.match(parts[-1]):
                        (into / parts[-1]).write_bytes(z.read(member))
        except zipfile.BadZipFile as e:
            raise FSDDError(f"{url}: not a zip archive ({e})") from e


def split_takes(split: str) -> tuple[int, ...]:
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be train or test, got {split!r}")
    return TEST_TAKES if split == "test" else tuple(i for i in range(N_TAKES) if i not in TEST_TAKES)


class Recordings:
    """Reads each FSDD take once (float32 in [-1, 1]), checking it first: a whole wav (header length =
    file length) and, in a fetched folder, the sha256 its RECORD holds."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.record = read_record(self.dir) if self.dir.is_dir() else None
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, digit: int, speaker: str, take: int) -> np.ndarray:
        import soundfile as sf

        name = f"{digit}_{speaker}_{take}.wav"
        if name not in self._cache:
            path = self.dir / name
            if not path.is_file():
                raise FSDDError(f"{path}: recording not found")
            data = path.read_bytes()
            check_wav_length(path, data)
            if self.record is not None:
                check_against_record(path, data, self.record)
            try:
                wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
            except RuntimeError as e:
                raise FSDDError(f"{path}: not a readable wav ({e})") from e
            if sr != SR or wave.ndim != 1:
                raise FSDDError(f"{path}: {sr} Hz, shape {wave.shape}; expected 8000 Hz mono")
            self._cache[name] = wave
        return self._cache[name]


@dataclass
class Utterance:
    wave: np.ndarray                      # float32 (L,)
    speaker: int                          # index into SPEAKERS
    digits: list[int]
    takes: list[int]
    intervals: list[tuple[int, int]] = field(default_factory=list)  # [start, end) sample of each digit


def take_level(take: np.ndarray) -> float:
    """RMS of the loudest 25 ms window (hop 10 ms) of a take."""
    import librosa

    win, hop = audio.frame_params(SR)
    return float(librosa.feature.rms(y=take, frame_length=win, hop_length=hop, center=False).max())


def trim_take(take: np.ndarray, top_db: float | None) -> np.ndarray:
    """Drop a take's residual leading/trailing silence (windows more than ``top_db`` below its loudest)."""
    import librosa

    if top_db is None:
        return take
    win, hop = audio.frame_params(SR)
    return librosa.effects.trim(take, top_db=top_db, frame_length=win, hop_length=hop)[0]


def dial(recordings: Recordings, split: str, u: int, seed: int = 0, digits: tuple[int, int] = DIGITS,
         pause_ms: tuple[float, float] = PAUSE_MS, noise_floor_db: float = NOISE_FLOOR_DB,
         trim_db: float | None = TRIM_DB) -> Utterance:
    """Utterance ``u`` of a split (deterministic in (seed, split, u))."""
    lo, hi = digits
    if not 1 <= lo <= hi:
        raise ValueError(f"digits must be 1 <= min <= max, got {digits}")
    takes_avail = split_takes(split)
    rng = np.random.default_rng([seed, SPLIT_CODE[split], u])
    speaker = u % len(SPEAKERS)
    n = int(rng.integers(lo, hi + 1))
    seq = [int(d) for d in rng.integers(0, N_DIGITS, n)]
    takes = [int(t) for t in rng.choice(takes_avail, n)]
    p_lo, p_hi = (round(SR * ms / 1000) for ms in pause_ms)
    pauses = rng.integers(p_lo, p_hi + 1, n + 1)
    waves = [trim_take(recordings(d, SPEAKERS[speaker], t), trim_db) for d, t in zip(seq, takes)]
    noise_std = max(take_level(w) for w in waves) * 10 ** (noise_floor_db / 20)
    parts, intervals, pos = [], [], 0
    for k in range(n + 1):
        parts.append(rng.normal(0.0, noise_std, pauses[k]).astype(np.float32))
        pos += pauses[k]
        if k < n:
            parts.append(waves[k])
            intervals.append((pos, pos + len(waves[k])))
            pos += len(waves[k])
    wave = np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)
    return Utterance(wave, speaker, seq, takes, intervals)


def step_digits(utt: Utterance, n_steps: int, sr: int = SR) -> np.ndarray:
    """Digit spoken at each step (centre of the step's window inside a take), -1 in pauses: (n_steps,)."""
    win, hop = audio.frame_params(sr)
    centres = np.arange(n_steps) * hop + win / 2
    out = np.full(n_steps, -1, np.int64)
    for d, (s, e) in zip(utt.digits, utt.intervals):
        out[(centres >= s) & (centres < e)] = d
    return out


def shard_utterances(shard: int, n_shards: int, n_utterances: int) -> range:
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    return range(shard, n_utterances, n_shards)


def build_shard(source_dir: str | Path, out: str | Path, split: str, shard: int = 0, n_shards: int = 1,
                n_utterances: int | None = None, seed: int = 0, digits: tuple[int, int] = DIGITS,
                pause_ms: tuple[float, float] = PAUSE_MS, noise_floor_db: float = NOISE_FLOOR_DB,
                trim_db: float | None = TRIM_DB, feature_mean: float = FEATURE_MEAN,
                feature_std: float = FEATURE_STD) -> int:
    """Write one segment shard of dialled numbers; returns the number of segments (rows)."""
    split_takes(split)
    n_utterances = N_UTTERANCES[split] if n_utterances is None else n_utterances
    if digits[1] > MAX_DIGITS_STORED:
        raise ValueError(f"at most {MAX_DIGITS_STORED} digits per utterance, got {digits}")
    recs = Recordings(source_dir)
    frames, waves, speaker, utt_id, step_digit, segment, utt_digits = [], [], [], [], [], [], []
    for u in shard_utterances(shard, n_shards, n_utterances):
        utt = dial(recs, split, u, seed, digits, pause_ms, noise_floor_db, trim_db)
        feats, w = audio.utterance_segments(utt.wave, SR, STEPS, feature_mean, feature_std)
        k = len(feats)
        frames.append(feats)
        waves.append(w)
        speaker += [utt.speaker] * k
        utt_id += [u] * k
        step_digit.append(step_digits(utt, k * STEPS).reshape(k, STEPS))
        segment += list(range(k))
        utt_digits += [utt.digits + [-1] * (MAX_DIGITS_STORED - len(utt.digits))] * k
    win, hop = audio.frame_params(SR)
    length = (STEPS - 1) * hop + win
    frames = np.concatenate(frames) if frames else np.zeros((0, STEPS, audio.N_MELS), np.float32)
    waves = np.concatenate(waves) if waves else np.zeros((0, length), np.float32)
    step_digit = np.concatenate(step_digit) if step_digit else np.zeros((0, STEPS), np.int64)
    with atomic_h5(out) as f:
        create_frames(f, frames)
        f.create_dataset("labels/speaker", data=np.asarray(speaker, np.int64).reshape(-1))
        f.create_dataset("labels/utterance", data=np.asarray(utt_id, np.int64).reshape(-1))
        f.create_dataset("labels/step_digit", data=step_digit)
        f.create_dataset("segment", data=np.asarray(segment, np.int64).reshape(-1))
        f.create_dataset("utterance_digits", data=np.asarray(utt_digits, np.int64).reshape(-1, MAX_DIGITS_STORED))
        f.create_dataset("waveforms", data=waves, chunks=(1, length) if len(waves) else None)
        f.attrs["split"] = split
        f.attrs["label_classes"] = '{"speaker": 6}'
        audio.write_audio_attrs(f, SR, STEPS)
        write_attrs(f, "fsdd-dialled", {
            "upstream": UPSTREAM, "tag": TAG, "commit": COMMIT, "speakers": SPEAKERS, "split": split,
            "test_takes": TEST_TAKES, "shard": shard, "n_shards": n_shards, "n_utterances": n_utterances,
            "seed": seed, "digits": digits, "pause_ms": pause_ms, "noise_floor_db": noise_floor_db,
            "trim_db": trim_db,
            "speaker_of_utterance": "u mod 6", "rng": "numpy default_rng([seed, split_code, u])",
            "split_code": SPLIT_CODE, "step_digit": "digit whose take contains the step's window centre, -1 pause",
            **audio.feature_params(SR, STEPS, feature_mean, feature_std)})
    return len(frames)


def stats(source_dir: str | Path, n_utterances: int = 300, seed: int = 0) -> dict:
    """Scalar mean/std of the unstandardised log-mel of the first train utterances (for FEATURE_*)."""
    recs = Recordings(source_dir)
    return audio.feature_stats(audio.segments(audio.log_mel(dial(recs, "train", u, seed).wave, SR))
                               for u in range(n_utterances))
