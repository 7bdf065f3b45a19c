"""Audio features shared by the audio recipes (FSDD "dialled numbers", TIMIT).

Paper §5.2 / App. E: speech is a sequence of 80-d mel-scale filter-bank features, cut into
segments of 200 ms = 20 steps. Our settings (identical for every recipe, recorded in shard attrs):

* STFT: Hann window of ``win_ms`` = 25 ms (200 samples at 8 kHz, 400 at 16 kHz), hop ``hop_ms`` =
  10 ms (80 / 160 samples), FFT size 512 (the 25 ms window zero-padded; with 256 points at 8 kHz the
  lowest of 80 mel filters would cover a single FFT bin), no centring: step ``t`` is the window of
  samples ``[t * hop, t * hop + win)`` (no reflection padding: a step never sees invented audio);
* mel filter bank: 80 triangular filters, librosa's default Slaney mel scale and area
  normalisation, ``fmin`` = 20 Hz (drops DC, as Kaldi's fbank), ``fmax`` = Nyquist: 4 kHz for the
  8 kHz FSDD recordings, 8 kHz for 16 kHz TIMIT (no filter is empty with these settings);
* log: natural log of the mel power, floored at ``amin`` = 1e-10.

The recipes then apply a fixed scalar affine standardisation ``(logmel - mean) / std`` whose
constants are recipe parameters (the same for every shard; ``feature_stats`` measures them), so the
spectral shape (timbre) is untouched and shards stay independent of each other.

A segment is 20 consecutive, non-overlapping steps: segment ``k`` holds steps ``20k .. 20k+19``;
trailing steps that do not fill a segment are dropped. ``segment_waves`` cuts the matching raw
samples (``19 * hop + win`` of them: exactly the samples the segment's 20 analysis windows see).
"""

from __future__ import annotations

import numpy as np

N_MELS = 80
WIN_MS = 25.0
HOP_MS = 10.0
N_FFT = 512
FMIN = 20.0
AMIN = 1e-10
STEPS = 20


def frame_params(sr: int, win_ms: float = WIN_MS, hop_ms: float = HOP_MS) -> tuple[int, int]:
    """(win_length, hop_length) in samples for a sample rate."""
    win, hop = round(sr * win_ms / 1000), round(sr * hop_ms / 1000)
    if not 0 < hop <= win:
        raise ValueError(f"need 0 < hop <= win, got win={win} hop={hop} samples at {sr} Hz")
    return win, hop


def n_steps(n_samples: int, sr: int, win_ms: float = WIN_MS, hop_ms: float = HOP_MS) -> int:
    """Number of feature steps of a wave of ``n_samples`` (``center=False``: whole windows only)."""
    win, hop = frame_params(sr, win_ms, hop_ms)
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def log_mel(wave: np.ndarray, sr: int, n_mels: int = N_MELS, win_ms: float = WIN_MS, hop_ms: float = HOP_MS,
            n_fft: int = N_FFT, fmin: float = FMIN, fmax: float | None = None, amin: float = AMIN) -> np.ndarray:
    """Log mel filter-bank features of a mono wave: float32 (steps, n_mels), step t = window at t*hop.

    The STFT is computed here rather than by ``librosa.stft``: librosa centres a ``win_length``
    window inside an ``n_fft`` frame, so with ``center=False`` its step t would analyse samples
    ``t*hop + (n_fft - win)/2 ...`` instead of starting at ``t*hop``. Here each frame is exactly the
    ``win`` samples ``[t*hop, t*hop + win)``, Hann-windowed (periodic, as librosa's) and zero-padded
    at the end to ``n_fft`` points; the filter bank is ``librosa.filters.mel``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave must be mono (1-d), got shape {wave.shape}")
    win, hop = frame_params(sr, win_ms, hop_ms)
    steps = n_steps(len(wave), sr, win_ms, hop_ms)
    if steps == 0:
        return np.zeros((0, n_mels), np.float32)
    n_fft = max(n_fft, win)
    frames = np.lib.stride_tricks.sliding_window_view(wave, win)[::hop][:steps]
    spec = np.abs(np.fft.rfft(frames * _hann(win), n=n_fft, axis=1)) ** 2
    mel = spec @ _mel_basis(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax).T
    return np.log(np.maximum(mel, amin)).astype(np.float32)


_CACHE: dict = {}


def _hann(win: int) -> np.ndarray:
    if ("hann", win) not in _CACHE:
        import scipy.signal

        _CACHE["hann", win] = scipy.signal.get_window("hann", win, fftbins=True).astype(np.float32)
    return _CACHE["hann", win]


def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    key = ("mel", sr, n_fft, n_mels, fmin, fmax)
    if key not in _CACHE:
        import librosa

        _CACHE[key] = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)
    return _CACHE[key]


def segments(features: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """Non-overlapping segments of ``steps`` steps: (S, D) -> (S // steps, steps, D); the rest is dropped."""
    n = len(features) // steps
    return np.ascontiguousarray(features[: n * steps].reshape(n, steps, *features.shape[1:]))


def segment_waves(wave: np.ndarray, sr: int, n_segments: int, steps: int = STEPS, win_ms: float = WIN_MS,
                  hop_ms: float = HOP_MS) -> np.ndarray:
    """The raw samples of each segment: float32 (n_segments, (steps-1)*hop + win).

    Row k starts at sample ``k * steps * hop``; its frames ``(t*hop, t*hop + win)`` for t < steps are
    exactly the analysis windows of the segment's steps, so an energy computed with the same
    window/hop on a row is aligned with the feature steps.
    """
    win, hop = frame_params(sr, win_ms, hop_ms)
    length = (steps - 1) * hop + win
    out = np.zeros((n_segments, length), np.float32)
    for k in range(n_segments):
        s = k * steps * hop
        chunk = wave[s:s + length]
        if len(chunk) != length:
            raise ValueError(f"segment {k} needs samples {s}..{s + length}, wave has {len(wave)}")
        out[k] = chunk
    return out


def utterance_segments(wave: np.ndarray, sr: int, steps: int = STEPS, mean: float = 0.0, std: float = 1.0,
                       **mel_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """One utterance -> (standardised log-mel segments float32 (K, steps, 80), raw samples (K, L))."""
    feats = segments(log_mel(wave, sr, **mel_kwargs), steps)
    win_ms = mel_kwargs.get("win_ms", WIN_MS)
    hop_ms = mel_kwargs.get("hop_ms", HOP_MS)
    waves = segment_waves(wave, sr, len(feats), steps, win_ms, hop_ms)
    return ((feats - np.float32(mean)) / np.float32(std)).astype(np.float32), waves


def feature_stats(feature_arrays) -> dict:
    """Global scalar mean/std of (unstandardised) log-mel arrays, to set a recipe's constants."""
    total, sq, n = 0.0, 0.0, 0
    for a in feature_arrays:
        a = np.asarray(a, dtype=np.float64)
        total += a.sum()
        sq += (a**2).sum()
        n += a.size
    if n == 0:
        raise ValueError("no features")
    mean = float(total / n)
    return {"mean": mean, "std": float(np.sqrt(max(sq / n - mean**2, 0.0))), "n_values": n}


def feature_params(sr: int, steps: int, mean: float, std: float) -> dict:
    """The feature settings of a shard, for its attrs."""
    win, hop = frame_params(sr)
    return {"sample_rate": sr, "n_mels": N_MELS, "win_ms": WIN_MS, "hop_ms": HOP_MS, "win_length": win,
            "hop_length": hop, "n_fft": max(N_FFT, win), "fmin": FMIN, "fmax": sr / 2, "mel_scale": "slaney",
            "window": "hann (periodic)", "frame": "[t*hop, t*hop+win), zero-padded to n_fft",
            "log": "ln(max(mel power, 1e-10))", "steps": steps,
            "standardise": "(logmel - feature_mean) / feature_std", "feature_mean": mean, "feature_std": std}


def write_audio_attrs(f, sr: int, steps: int) -> None:
    """Plain attrs the silence stage reads (besides the recipe's JSON params)."""
    win, hop = frame_params(sr)
    f.attrs["sample_rate"] = sr
    f.attrs["win_length"] = win
    f.attrs["hop_length"] = hop
    f.attrs["steps"] = steps
