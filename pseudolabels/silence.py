"""Silence pseudo-labels for audio (paper §4.2: audio's off-the-shelf dynamic signal is silence).

For every step of a segment we measure the RMS of the step's analysis window, on the raw samples
the clip shard stores in ``/waveforms`` (row k of a segment covers ``(steps-1)*hop + win`` samples,
and ``librosa.feature.rms(frame_length=win, hop_length=hop, center=False)`` gives exactly one value
per feature step, over the same samples as the log-mel step). The level is expressed in dB with
``librosa.amplitude_to_db`` relative to a reference:

* ``ref="utterance"`` (default): the loudest step of the segment's utterance (all segments with
  the same ``/labels/utterance`` -- the recipes keep an utterance's segments in one shard), so the
  rule does not depend on recording gain;
* ``ref="full_scale"``: 1.0, i.e. dBFS.

A step is silent (label 1) when its level is below ``threshold_db`` (default -40 dB: on FSDD
dialled numbers the pauses' noise floor sits about 45-55 dB below an utterance's loudest step, and
the quiet onsets/offsets of digit takes mostly above -40 dB; see the tests).

Output (row-aligned with the clip shard):

    /silence_labels   int64 (N, steps)    1 = silent, 0 = speech
    /silence_db       float16 (N, steps)  the level in dB re the reference
    attrs             recipe "silence-rms-db", its parameters, librosa version

CLI:  python -m pseudolabels.silence CLIPS.h5 OUT.h5 --threshold-db -40 --ref utterance
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from s3vae.data import ShardError, atomic_h5, open_shard, write_attrs

REFS = ("utterance", "full_scale")
THRESHOLD_DB = -40.0
AMIN = 1e-5  # amplitude floor (-100 dBFS)


def step_rms(waves: np.ndarray, win: int, hop: int, steps: int) -> np.ndarray:
    """RMS of each step's window: waves (N, (steps-1)*hop + win) -> (N, steps)."""
    import librosa

    if waves.shape[-1] != (steps - 1) * hop + win:
        raise ValueError(f"segments have {waves.shape[-1]} samples, expected (steps-1)*hop+win = "
                         f"{(steps - 1) * hop + win}")
    if len(waves) == 0:
        return np.zeros((0, steps), np.float32)
    rms = librosa.feature.rms(y=np.asarray(waves, np.float32), frame_length=win, hop_length=hop, center=False)
    return rms[:, 0, :steps]


def silence_db(rms: np.ndarray, groups: np.ndarray | None, ref: str = "utterance") -> np.ndarray:
    """Level in dB of each step re the loudest step of its group (``groups`` (N,), e.g. utterance ids)."""
    import librosa

    if ref not in REFS:
        raise ValueError(f"unknown ref {ref!r}; choose from {REFS}")
    if ref == "full_scale":
        return librosa.amplitude_to_db(rms, ref=1.0, amin=AMIN, top_db=None)
    out = np.zeros_like(rms, dtype=np.float32)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = librosa.amplitude_to_db(rms[rows], ref=np.max, amin=AMIN, top_db=None)
    return out


def silence_labels(level_db: np.ndarray, threshold_db: float = THRESHOLD_DB) -> np.ndarray:
    return (level_db < threshold_db).astype(np.int64)


def compute_shard(clips_path: str, out_path: str, threshold_db: float = THRESHOLD_DB, ref: str = "utterance") -> int:
    """Silence labels for every segment of an audio clip shard, written row-aligned to ``out_path``."""
    import librosa

    required = ["waveforms"] + (["labels/utterance"] if ref == "utterance" else [])
    with open_shard(clips_path, required) as f:
        for key in ("win_length", "hop_length", "steps"):
            if key not in f.attrs:
                raise ShardError(f"{clips_path}: attr '{key}' missing (not an audio clip shard?)")
        win, hop, steps = (int(f.attrs[k]) for k in ("win_length", "hop_length", "steps"))
        waves = f["waveforms"][()]
        groups = f["labels/utterance"][()] if ref == "utterance" else None
        if "frames" in f and f["frames"].shape[:2] != (len(waves), steps):
            raise ShardError(f"{clips_path}: frames {f['frames'].shape} do not match {len(waves)} segments "
                             f"of {steps} steps")
    try:
        level = silence_db(step_rms(waves, win, hop, steps), groups, ref)
    except ValueError as e:
        raise ShardError(f"{clips_path}: {e}") from e
    with atomic_h5(out_path) as g:
        g.create_dataset("silence_labels", data=silence_labels(level, threshold_db))
        g.create_dataset("silence_db", data=level.astype(np.float16))
        write_attrs(g, "silence-rms-db", {"source": str(clips_path), "threshold_db": threshold_db, "ref": ref,
                                          "amin": AMIN, "win_length": win, "hop_length": hop, "steps": steps,
                                          "rms": "librosa.feature.rms(center=False)",
                                          "librosa": librosa.__version__})
    return len(waves)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="silence pseudo-labels: step RMS below a dB threshold")
    p.add_argument("clips", help="audio clip shard (HDF5 with /waveforms)")
    p.add_argument("out", help="output label shard")
    p.add_argument("--threshold-db", type=float, default=THRESHOLD_DB)
    p.add_argument("--ref", choices=REFS, default="utterance")
    a = p.parse_args(argv)
    try:
        n = compute_shard(a.clips, a.out, a.threshold_db, a.ref)
    except ShardError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {a.out}: silence labels of {n} segments")


if __name__ == "__main__":
    main()
