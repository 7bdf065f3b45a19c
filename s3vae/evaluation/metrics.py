"""The metrics of Appendix C (Acc, IS, H(y|x), H(y)) on generated clips, read by a judge (``judge.py``).

Protocol (paper §5.1.3, as made precise by the later literature, e.g. C-DSVAE, Bai et al. 2021):

* **static factors** (Sprites' four attributes): keep z_f = the posterior mean of a real test clip,
  sample z_1:T from the learned prior p(z_1:T), decode, and ask the judge whether the attributes of
  the generated clip are those of the real clip;
* **dynamic factor** (Sprites' action): keep z_1:T = the posterior means of a real test clip, sample
  z_f ~ N(0, I), decode, and judge the action.

Acc is the agreement between the judge's prediction on the generated clip and the real clip's
label. IS = exp(E_x KL(p(y|x) || p(y))), H(y|x) = E_x[-sum_y p(y|x) log p(y|x)], H(y) = entropy of
p(y) = mean_x p(y|x), all on the judge's softmax over the generated clips, on a class-balanced subset
of the test clips (every class cut down to the rarest class's count; Sprites' actions are balanced by
construction, so for them it is the whole set). For Sprites, Table 1's
Acc is the mean of the action accuracy and the attribute accuracy (itself the mean over the four
attributes), while IS, H(y|x) and H(y) are those of the action head (9 classes, which is what the
paper's values, e.g. H(y) = 2.197 ≈ ln 9, are on scale with). All are written out separately.

The judge is trained on real training clips with ground-truth labels; its held-out accuracy on the
real test clips is written beside it so that every generated-clip score can be read against it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from s3vae.data import ClipDataset, batch_of, index_batches
from s3vae.evaluation.judge import Judge
from s3vae.model import S3VAE
from s3vae.utils import seed_everything


# --- Appendix C metrics -----------------------------------------------------------------------
def appendix_c_metrics(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> dict[str, float]:
    """Acc, IS, H(y|x), H(y) (eq. 15-17) from the judge's softmax ``probs`` (N, K) on generated clips."""
    probs = np.asarray(probs, dtype=np.float64)
    p_y = probs.mean(0)
    h_y_x = float(-(probs * np.log(probs + eps)).sum(1).mean())
    h_y = float(-(p_y * np.log(p_y + eps)).sum())
    kl = (probs * (np.log(probs + eps) - np.log(p_y + eps))).sum(1)
    return {"acc": float((probs.argmax(1) == np.asarray(labels)).mean()), "IS": float(np.exp(kl.mean())),
            "H_y_x": h_y_x, "H_y": h_y}


def balanced_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset: every class present cut down to the rarest one's count
    (a seeded choice), sorted. The metrics are computed "with classes balanced": on an
    unbalanced test set (MUG) the inter-entropy H(y) would otherwise reward the class skew."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), counts.min(), replace=False) for c in classes]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


@torch.no_grad()
def generate(model: S3VAE, x: torch.Tensor, keep: str) -> torch.Tensor:
    """Generated clips for a batch of real clips: ``keep='dynamic'`` keeps z_1:T (posterior mean) and
    samples z_f ~ p(z_f); ``keep='static'`` keeps z_f (posterior mean) and samples z_1:T ~ p(z_1:T)."""
    enc = model.encode(x)
    B, T = x.shape[:2]
    if keep == "dynamic":
        return model.decode(torch.randn_like(enc["zf_mu"]), enc["zt_mu"])
    if keep == "static":
        return model.decode(enc["zf_mu"], model.sample_zt(B, T, device=x.device))
    raise ValueError(f"keep must be 'static' or 'dynamic', got {keep!r}")


def swap_partners(dynamic: np.ndarray, static: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """For each clip i a partner j with another dynamic label (and, given ``static`` (N, S) labels,
    at least one other static label), drawn at random; clips without such a partner get -1."""
    rng = np.random.default_rng(seed)
    dynamic = np.asarray(dynamic)
    ok = dynamic[:, None] != dynamic[None, :]
    if static is not None:
        ok &= (np.asarray(static)[:, None, :] != np.asarray(static)[None, :, :]).any(-1)
    out = np.full(len(dynamic), -1)
    for i in range(len(dynamic)):
        cand = np.flatnonzero(ok[i])
        if len(cand):
            out[i] = rng.choice(cand)
    return out


@torch.no_grad()
def swap_generate(model: S3VAE, x_static: torch.Tensor, x_dynamic: torch.Tensor) -> torch.Tensor:
    """Motion transfer (Fig. 4): decode z_f of ``x_static`` (posterior mean) with z_1:T of ``x_dynamic``."""
    return model.decode(model.encode(x_static)["zf_mu"], model.encode(x_dynamic)["zt_mu"])


@torch.no_grad()
def reconstruct(model: S3VAE, x: torch.Tensor) -> torch.Tensor:
    """Plain reconstruction: decode the posterior means of z_f and z_1:T of the same clips."""
    enc = model.encode(x)
    return model.decode(enc["zf_mu"], enc["zt_mu"])


def latent_swap(model: S3VAE):
    """(swap, reconstruct) for ``swap_scores``: clips decoded from z_f of A and z_1:T of B, and from A's own."""
    return (lambda a, b: swap_generate(model, a, b)), (lambda a: reconstruct(model, a))


@torch.no_grad()
def evaluate_model(model: S3VAE, judge: Judge, test_shards, static_labels: list[str], dynamic_labels: list[str],
                   batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """Appendix C metrics of one trained model under the protocol in the module docstring."""
    seed_everything(seed)
    data = ClipDataset(test_shards, preload=True)
    probs = {k: [] for k in static_labels + dynamic_labels}
    labels = {k: [] for k in probs}
    for idx in index_batches(len(data), batch_size, False):
        b = batch_of(data, idx)
        x = b["frames"].to(device)
        for keep, names in (("dynamic", dynamic_labels), ("static", static_labels)):
            if not names:
                continue
            out = judge(generate(model, x, keep))
            for k in names:
                probs[k].append(F.softmax(out[k], -1).cpu().numpy())
                labels[k].append(b[k].numpy())
    result = judged_metrics({k: np.concatenate(v) for k, v in probs.items()},
                            {k: np.concatenate(v) for k, v in labels.items()}, static_labels, dynamic_labels, seed)
    result.update(swap_scores(*latent_swap(model), judge, data, static_labels, dynamic_labels, batch_size, seed,
                              device))
    return result


def judged_metrics(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], static_labels: list[str],
                   dynamic_labels: list[str], seed: int = 0) -> dict:
    """Appendix C metrics per label from the judge's softmax on generated clips (one per test clip) and
    the labels they should show, then the mean over each group's labels (e.g. Sprites' four attributes)."""
    per_label = {}
    for k in probs:
        keep = balanced_indices(labels[k], seed)  # equal clips per true class, so H(y) and IS are not skewed
        per_label[k] = {**appendix_c_metrics(probs[k][keep], labels[k][keep]), "n_balanced": int(len(keep))}
    result = {"per_label": per_label, "n_test": len(next(iter(labels.values())))}
    for group, names in (("dynamic", dynamic_labels), ("static", static_labels)):
        if names:
            result[group] = {m: float(np.mean([per_label[k][m] for k in names])) for m in per_label[names[0]]}
    return result


def swap_test_partners(data: ClipDataset, static_labels: list[str], dynamic_labels: list[str],
                       seed: int = 0) -> np.ndarray:
    """The partner B of every test clip A in the swap score (``swap_partners``; -1: none): another dynamic
    label and other static labels; without a dynamic label (SMMNIST), other static labels."""
    static_y = np.stack([data.arrays(f"labels/{k}") for k in static_labels], 1) if static_labels else None
    if dynamic_labels:
        return swap_partners(data.arrays(f"labels/{dynamic_labels[0]}"), static_y, seed)
    return swap_partners(np.unique(static_y, axis=0, return_inverse=True)[1].ravel(), None, seed)


@torch.no_grad()
def swap_scores(swap, reconstruct, judge: Judge, data: ClipDataset, static_labels: list[str],
                dynamic_labels: list[str], batch_size: int = 128, seed: int = 0, device="cpu") -> dict:
    """Fig. 4's motion transfer as a number (the paper shows it only as pictures), and its ceiling.

    ``swap``: every test clip A is generated by ``swap(A, B)`` with a partner B that has another dynamic
    label and other static labels (``swap_test_partners``); the judge must find A's static and B's dynamic
    labels. An S3VAE decodes z_f of A with z_1:T of B (``latent_swap``); MonkeyNet animates A's first
    frame by B's keypoint motion (``s3vae.comparisons.monkeynet.transfer_pair``). ``reconstruction``: the judge on
    ``reconstruct(A)`` (an S3VAE: z_f and z_1:T of the same clip), the ceiling that blur leaves for every
    generated score. Accuracies per label and per group (mean over labels).
    """
    names = static_labels + dynamic_labels
    y = {k: data.arrays(f"labels/{k}") for k in names}
    partner = swap_test_partners(data, static_labels, dynamic_labels, seed)
    hits = {"swap": {k: [] for k in names}, "reconstruction": {k: [] for k in names}}
    for idx in index_batches(len(data), batch_size, False):
        idx = [i for i in idx if partner[i] >= 0]
        if not idx:
            continue
        x = batch_of(data, idx)["frames"].to(device)
        x_b = batch_of(data, partner[idx])["frames"].to(device)
        outs = {"swap": judge(swap(x, x_b)), "reconstruction": judge(reconstruct(x))}
        for kind, out in outs.items():
            for k in names:
                source = partner[idx] if kind == "swap" and k in dynamic_labels else np.asarray(idx)
                hits[kind][k].append(out[k].argmax(-1).cpu().numpy() == y[k][source])
    result = {}
    for kind, per in hits.items():
        acc = {k: float(np.concatenate(v).mean()) for k, v in per.items() if v}
        result[kind] = {"per_label": acc, "n": int((partner >= 0).sum())}
        for group, group_names in (("dynamic", dynamic_labels), ("static", static_labels)):
            if group_names and acc:
                result[kind][group] = float(np.mean([acc[k] for k in group_names]))
    return result


def summary_row(result: dict, primary: str = "dynamic") -> dict:
    """Table 1's cells from one evaluation: Acc averaged over the factors evaluated; IS and the
    entropies of the ``primary`` factor (see the module docstring)."""
    groups = [g for g in ("dynamic", "static") if g in result]
    row = {"acc": float(np.mean([result[g]["acc"] for g in groups]))}
    src = result[primary] if primary in result else result[groups[0]]
    row.update({"IS": src["IS"], "H_y_x": src["H_y_x"], "H_y": src["H_y"]})
    for g in groups:
        row[f"acc_{g}"] = result[g]["acc"]
    return row
