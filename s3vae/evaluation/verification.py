"""Speaker verification EER on audio shards (paper §5.2, Table 3; App. C).

An utterance is represented by the mean over its 200 ms segments of

* ``which="static"``: the posterior mean of z_f, ``encode(x)["zf_mu"]`` (B, Df);
* ``which="dynamic"``: the time-mean of the posterior means of z_1:T, ``encode(x)["zt_mu"].mean(1)``;

segments are grouped by ``/labels/utterance`` (ids are unique within a split; pass shards of one
split). Every pair of distinct test utterances is scored by the cosine similarity of their
embeddings; a pair is a target when both utterances have the same ``/labels/speaker``. The EER is
the error rate at the threshold where the false-acceptance rate (FPR) equals the false-rejection
rate (FNR = 1 - TPR): on the ROC curve of ``sklearn.metrics.roc_curve`` we take the first point
with FNR <= FPR and interpolate linearly between it and the point before. Small EER with z_f and
large EER (ideally 50%) with z_1:T mean the factors are disentangled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from s3vae.data import ShardError, open_shard

WHICH = ("static", "dynamic")


class UtteranceEmbeddings(NamedTuple):
    embeddings: np.ndarray   # float64 (U, D)
    speakers: np.ndarray     # int64 (U,)
    utterances: np.ndarray   # int64 (U,) utterance ids, sorted


@torch.no_grad()
def segment_embeddings(model, frames: np.ndarray, which: str = "static", device: str | torch.device = "cpu",
                       batch_size: int = 256) -> np.ndarray:
    """Per-segment embeddings of frames (N, T, D): z_f posterior mean or time-mean of z_t posterior means."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    out = []
    for s in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch_size], dtype=np.float32)).to(device)
        enc = model.encode(x)
        z = enc["zf_mu"] if which == "static" else enc["zt_mu"].mean(dim=1)
        out.append(z.detach().double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def utterance_embeddings(model, shards: Sequence[str], which: str = "static", device: str | torch.device = "cpu",
                         batch_size: int = 256) -> UtteranceEmbeddings:
    """Mean segment embedding of every utterance in ``shards`` (model put in eval mode meanwhile)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    speaker: dict[int, int] = {}
    try:
        for path in shards:
            with open_shard(path, ["frames", "labels/utterance", "labels/speaker"]) as f:
                utt, spk = f["labels/utterance"][()], f["labels/speaker"][()]
                frames = f["frames"]
                for s in range(0, len(utt), batch_size):
                    z = segment_embeddings(model, frames[s:s + batch_size], which, device, batch_size)
                    for row, (u, k) in enumerate(zip(utt[s:s + batch_size].tolist(), spk[s:s + batch_size].tolist())):
                        if speaker.setdefault(u, k) != k:
                            raise ShardError(f"{path}: utterance {u} has segments of speakers {speaker[u]} and {k}")
                        sums[u] = sums[u] + z[row] if u in sums else z[row].copy()
                        counts[u] = counts.get(u, 0) + 1
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    ids = np.array(sorted(sums), dtype=np.int64)
    if not len(ids):
        raise ShardError(f"{list(shards)}: no segments")
    emb = np.stack([sums[u] / counts[u] for u in ids])
    return UtteranceEmbeddings(emb, np.array([speaker[u] for u in ids], np.int64), ids)


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    """EER of verification trials: ``scores`` (higher = more likely same), ``same`` (bool targets)."""
    from sklearn.metrics import roc_curve

    scores, same = np.asarray(scores, np.float64).ravel(), np.asarray(same).astype(bool).ravel()
    if len(scores) != len(same):
        raise ValueError(f"{len(scores)} scores for {len(same)} labels")
    if same.all() or not same.any():
        raise ValueError("EER needs both target (same) and non-target trials")
    fpr, tpr, _ = roc_curve(same, scores)
    fnr = 1.0 - tpr
    d = fnr - fpr                               # starts at 1 (fpr 0, fnr 1), ends at -1; non-increasing
    i = int(np.argmax(d <= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])            # where the segment between points i-1 and i crosses fpr = fnr
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def cosine_trials(embeddings: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker flags of all pairs i < j."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    i, j = np.triu_indices(len(e), k=1)
    speakers = np.asarray(speakers)
    return np.einsum("nd,nd->n", e[i], e[j]), speakers[i] == speakers[j]


def verification_eer(embeddings: np.ndarray, speakers: np.ndarray) -> float:
    """EER of cosine scoring over all utterance pairs."""
    return equal_error_rate(*cosine_trials(embeddings, speakers))


def speaker_verification(model, shards: Sequence[str], device: str | torch.device = "cpu",
                         batch_size: int = 256) -> dict:
    """Table 3 for one model: EER with z_f and with z_1:T, plus the trial counts."""
    out = {}
    for which in WHICH:
        emb = utterance_embeddings(model, shards, which, device, batch_size)
        out[f"eer_{which}"] = verification_eer(emb.embeddings, emb.speakers)
        out[f"dim_{which}"] = int(emb.embeddings.shape[1])
    n = len(emb.utterances)
    _, same = cosine_trials(np.zeros((n, 1)), emb.speakers)
    out.update(n_utterances=n, n_speakers=int(len(np.unique(emb.speakers))), n_target_trials=int(same.sum()),
               n_nontarget_trials=int((~same).sum()))
    return out


@torch.no_grad()
def dynamic_content(model, shards: Sequence[str], label_shards: Sequence[str] = (), device: str | torch.device = "cpu",
                    batch_size: int = 256, max_segments: int = 2000, seed: int = 0) -> dict:
    """What z_1:T still carries besides the speaker: a z_1:T that has merely stopped carrying anything
    would also make Table 3's dynamic EER high.

    On up to ``max_segments`` test segments: ``recon_mse``, the squared error of the reconstruction from
    the posterior means summed over a segment's features and steps (the Gaussian -log p(x|z) up to
    constants); ``probe_<label>``, the accuracy of a logistic-regression probe reading each step's z_t
    posterior mean, fitted on the segments of even utterance ids and scored on the odd ones, for the
    per-step spoken digit (``labels/step_digit``) and, with ``label_shards``, the silence pseudo-labels.
    """
    from sklearn.linear_model import LogisticRegression

    was_training = model.training
    model.eval()
    zs, errs, utts, labels = [], [], [], {}
    for i, path in enumerate(shards):
        keys = ["frames", "labels/utterance", "labels/step_digit"]
        with open_shard(path, keys) as f:
            n = len(f["frames"])
            frames, utt, digit = f["frames"][()], f["labels/utterance"][()], f["labels/step_digit"][()]
        labels.setdefault("digit", []).append(digit)
        if label_shards:
            with open_shard(label_shards[i], ["silence_labels"]) as f:
                if len(f["silence_labels"]) != n:
                    raise ShardError(f"{label_shards[i]}: {len(f['silence_labels'])} rows for {n} segments of {path}")
                labels.setdefault("silence", []).append(f["silence_labels"][()])
        for s in range(0, n, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch_size], dtype=np.float32)).to(device)
            enc = model.encode(x)
            x_hat = model.decode(enc["zf_mu"], enc["zt_mu"])
            errs.append(((x_hat - x) ** 2).sum((1, 2)).double().cpu().numpy())
            zs.append(enc["zt_mu"].double().cpu().numpy())
        utts.append(utt)
    model.train(was_training)
    z, err, utt = np.concatenate(zs), np.concatenate(errs), np.concatenate(utts)
    keep = np.sort(np.random.default_rng(seed).permutation(len(z))[:max_segments])
    z, err, utt = z[keep], err[keep], utt[keep]
    fit = utt % 2 == 0
    out = {"recon_mse": float(err.mean())}
    T = z.shape[1]
    for name, ys in labels.items():
        y = np.concatenate(ys)[keep]
        X, y = z.reshape(-1, z.shape[-1]), y.reshape(-1)
        rows = np.repeat(fit, T) & (y >= 0), np.repeat(~fit, T) & (y >= 0)   # -1: a step of no digit (pause)
        (X_fit, y_fit), (X_test, y_test) = ((X[r], y[r]) for r in rows)
        mean, std = X_fit.mean(0), X_fit.std(0) + 1e-8
        with warnings.catch_warnings():  # an untrained model's z_t may not separate: no convergence, a low score
            warnings.simplefilter("ignore")
            probe = LogisticRegression(max_iter=300).fit((X_fit - mean) / std, y_fit)
        out[f"probe_{name}"] = float(probe.score((X_test - mean) / std, y_test))
        out[f"probe_{name}_chance"] = float(np.bincount(y_test).max() / len(y_test))
    out["probe_segments"], out["probe_steps"] = int(len(z)), int(T)
    return out
