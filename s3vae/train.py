"""Training loop for S3VAE: deterministic, checkpointed every epoch, resumable (``train``, called by
the workflow's ``train_model`` rule and by ``benchmarks/quality_curve.py``).

A run writes ``ckpt_dir/last.pt`` (model, optimiser, epoch, RNG state, loss history) after every
epoch and ``ckpt_dir/losses.csv`` as it goes; a killed run started again with the same arguments
resumes from ``last.pt``. Checkpoints are plain tensors and primitives, loaded with
``weights_only=True``. The final ``out`` file holds the weights and both configs.

Determinism: the epoch's shuffling comes from a generator seeded by (seed, epoch), and the global
torch RNG state (reparameterisation noise, SCC shuffles) is saved in the checkpoint, so a resumed
run continues the same random stream as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from s3vae.data import ClipDataset, batch_of
from s3vae.losses import (
    DFPKind,
    LossOptions,
    MIEstimator,
    MIGrad,
    MIPairs,
    MIReduce,
    Recon,
    SCCOn,
    critic_fit,
    s3vae_loss,
)
from s3vae.model import S3VAE, S3VAEConfig
from s3vae.utils import (
    atomic_torch_save,
    check_literals,
    data_fingerprint,
    file_states,
    pick_device,
    resolve_amp,
    seed_everything,
)

LOSS_COLUMNS = ("loss", "recon", "kl_f", "kl_t", "scc", "dfp", "mi", "mi_grad", "mi_fit", "adv", "conf")


@dataclass
class TrainConfig:
    epochs: int = 1000                 # App. D
    batch_size: int = 16               # App. D
    lr: float = 1e-3                   # App. D, Adam(0.9, 0.999)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # App. D; cosine: lr (1 + cos(pi s / S)) / 2 at step s of S
    lambda_scc: float = 1000.0         # λ1, App. D
    lambda_dfp: float = 100.0          # λ2
    lambda_mi: float = 1.0             # λ3
    mi_estimator: MIEstimator = "mws"  # L_MI: "mws" (eq. 7-8) or "club" (losses.club_mi)
    mi_reduce: MIReduce = "sum"        # mws: eq. 7's per-step terms "sum" (the paper) or "mean" (C-DSVAE's code)
    mi_pairs: MIPairs = "step"         # club: "step" (z_f, z_t) pairs or "sequence" (z_f, time-mean of z_1:T)
    mi_grad: MIGrad = "zt"             # club: the latent its gradient reaches: "zt", "zf" or "both"
    critic_steps: int = 5              # club: steps of q's own Adam per model step (0: one step of the model's)
    critic_lr: float = 1e-4            # club: that optimiser's learning rate
    margin: float = 1.0                # m in eq. 6
    scc_on: SCCOn = "samples"          # eq. 6 on z_f "samples" (literal) or posterior "means" (losses.s3vae_loss)
    lambda_adv: float = 0.0            # static adversary on the DFP labels (a departure; 0 = the paper)
    recon: Recon = "mse"               # -log p(x|z): "mse" (Gaussian) or "bce" (Bernoulli)
    recon_weight: float = 1.0          # factor on -log p(x|z) (1: the Gaussian's variance 1/2, the plain Bernoulli)
    dfp_key: str = "flow_labels"       # which pseudo-label dataset L_DFP reads
    dfp_kind: DFPKind = "topk"         # topk (cross-entropy), binary, regression (MSE)
    dfp_offset: int = 1                # first frame the DFP labels cover (flow: frame 2)
    seed: int = 1
    device: str = "auto"
    threads: int = 0                   # torch CPU threads (0: leave torch's default)
    preload: bool = True               # read shards into RAM once (small datasets) vs lazy per worker
    num_workers: int = 0
    max_steps_per_epoch: int = 0       # 0 = full epochs; >0 caps steps (smoke tests)
    log_every: int = 50                # steps between rows of steps.csv and TensorBoard scalars
    amp: Literal["none", "bf16", "auto"] = "auto"  # bf16 autocast, float32, or bf16 where native (resolve_amp)
    channels_last: bool = True         # NHWC conv layout: faster steps on CPU (oneDNN; benchmarks/README.md)

    def __post_init__(self):
        check_literals(self)


def load_checkpoint(path: str | Path) -> dict:
    from s3vae.utils import load_weights_only

    return load_weights_only(path, "cpu")


# Settings that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("epochs", "device", "threads", "preload", "num_workers", "amp", "channels_last", "log_every")


def _resume_key(train_config: dict) -> dict:
    key = {k: v for k, v in train_config.items() if k not in RESUMABLE_CHANGES}
    if train_config.get("lr_schedule", "constant") != "constant":  # the schedule spans all the epochs
        key["epochs"] = train_config["epochs"]
    return key


def model_input(model_cfg: S3VAEConfig) -> dict:
    """The stored frame shape this model reads, for ``ClipDataset`` to check each shard against when opened."""
    if model_cfg.modality == "audio":
        return {"clip_shape": (model_cfg.feat_in,), "expected": f"model feat_in = {model_cfg.feat_in}"}
    size, c = model_cfg.image_size, model_cfg.channels
    return {"clip_shape": (size, size, c), "expected": f"model image_size = {size}, channels = {c}"}


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (clip indices) of one epoch: a permutation seeded by (seed, epoch), last partial batch dropped."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]  # drop_last


def regression_stats(values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-signal mean and std of regression DFP targets over the training set (NaN rows ignored).

    Landmark gaps are ~0.1 with a std of ~0.01 and velocities are in pixels: L_DFP regresses them
    standardised, so that λ2 means the same for every signal.
    """
    flat = values.reshape(-1, int(np.prod(values.shape[2:]))).astype(np.float64)  # (N, T, ...) -> (N*T, D)
    mean, std = np.nanmean(flat, 0), np.nanstd(flat, 0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.maximum(std, 1e-6), dtype=torch.float32)


def check_unchanged(before: list[list], paths: list[str]) -> None:
    """Refuse to yield a model when a training file was rewritten during training (mixed data)."""
    changed = [a[0] for a, b in zip(before, file_states(paths)) if a != b]
    if changed:
        from s3vae.data import ShardError

        raise ShardError(f"{', '.join(changed)}: changed while training (another process rewrote it), so the "
                         "model saw mixed data and was not written; rerun once that process is done")


def _stale_reason(ck: dict, model_cfg: S3VAEConfig, cfg: TrainConfig, fingerprint: str) -> str | None:
    if ck["model_config"] != asdict(model_cfg) or _resume_key(ck["train_config"]) != _resume_key(asdict(cfg)):
        return "a different configuration"
    if ck.get("data", fingerprint) != fingerprint:  # checkpoints from before the fingerprint: trusted
        return "different training data (shards rebuilt or changed since)"
    if ck["epoch"] > cfg.epochs:
        return f"more epochs ({ck['epoch']}) than the {cfg.epochs} asked"
    return None


def train(clip_shards: list[str], label_shards: dict[str, list[str]], out: str | Path, ckpt_dir: str | Path,
          model_cfg: S3VAEConfig, cfg: TrainConfig, log=print, on_step=None, on_stale: str = "error") -> dict:
    """Train, resuming from ``ckpt_dir/last.pt`` if present; returns the final weights and history.

    A checkpoint resumes only when it was written with the same model and training configuration
    and the same training files (``data_fingerprint``); otherwise ``on_stale="error"`` refuses
    (ValueError naming the checkpoint) and ``on_stale="restart"`` discards it and starts over (the
    workflow's choice: Snakemake reruns the rule precisely when its params or inputs changed).
    ``on_step(epoch, step, model, parts)`` is called after every optimiser step (progress hooks, quality curves, tests).
    SIGTERM/SIGUSR1/SIGINT make the loop finish its current step, checkpoint, and raise TrainingInterrupted.
    """
    if on_stale not in ("error", "restart"):
        raise ValueError(f"on_stale must be 'error' or 'restart', got {on_stale!r}")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    uses_dfp = cfg.lambda_dfp > 0 or cfg.lambda_adv > 0
    data = ClipDataset(clip_shards, label_shards if uses_dfp else {}, preload=cfg.preload, **model_input(model_cfg))
    if len(data) < cfg.batch_size:
        raise ValueError(f"{len(data)} training clips is fewer than one batch of {cfg.batch_size}")
    N = len(data)
    label_files = [p for k in sorted(data.label_shards) for p in data.label_shards[k]]
    fingerprint = data_fingerprint([*clip_shards, *label_files])
    states = file_states([*clip_shards, *label_files])
    if uses_dfp and cfg.dfp_kind == "regression":
        stored = cfg.dfp_key if cfg.dfp_key in data.label_shards else f"labels/{cfg.dfp_key}"  # pseudo or GT
        dfp_mean, dfp_std = (t.to(device) for t in regression_stats(data.arrays(stored)))
        log(f"L_DFP regresses {cfg.dfp_key} standardised: mean {dfp_mean.tolist()}, std {dfp_std.tolist()}")

    seed_everything(cfg.seed)
    model = S3VAE(model_cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fitter = None
    if cfg.lambda_mi > 0 and cfg.mi_estimator == "club" and cfg.critic_steps > 0 and model_cfg.mi_critic == "club":
        fitter = CriticFitter(model, cfg.critic_steps, cfg.critic_lr, cfg.mi_pairs)
    critic = set(fitter.params) if fitter else set()
    opt = torch.optim.Adam([p for p in model.parameters() if p not in critic], lr=cfg.lr, betas=(0.9, 0.999))
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {cfg.lr_schedule!r}")
    loss_opts = LossOptions.of(cfg)  # checks the loss options' values
    if cfg.lambda_mi > 0 and cfg.mi_estimator == "club" and model_cfg.mi_critic != "club":
        raise ValueError("mi_estimator 'club' needs the model's q(z_t | z_f): set model mi_critic: club")
    history: list[dict] = []
    start_epoch, start_step, start_sums = 0, 0, None
    last = ckpt_dir / "last.pt"
    ck = None
    if last.exists():
        try:
            ck = load_checkpoint(last)
        except Exception as e:  # truncated or corrupt file (a crash during a copy, a full disk)
            if on_stale == "error":
                raise ValueError(f"{last}: unreadable checkpoint ({type(e).__name__}: {e}); delete it (or "
                                 f"{ckpt_dir}) to start over") from e
            log(f"{last}: unreadable checkpoint ({type(e).__name__}); starting over")
            last.unlink()
    if ck is not None and (why := _stale_reason(ck, model_cfg, cfg, fingerprint)):
        if on_stale == "error":
            raise ValueError(f"{last}: checkpoint was written with {why}; delete {ckpt_dir} to start over")
        log(f"{last}: checkpoint was written with {why}; starting over")
        last.unlink()
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if fitter:
            fitter.opt.load_state_dict(ck["critic_optimizer"])
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state(ck["rng_cuda"])
        start_epoch, history = ck["epoch"], ck["history"]
        start_step, start_sums = ck.get("step", 0), ck.get("sums")
        log(f"resumed from {last} at epoch {start_epoch}, step {start_step}")
    log(f"training on {device} with {N} clips, {sum(p.numel() for p in model.parameters())} parameters, "
        f"torch threads {torch.get_num_threads()}, autocast {resolve_amp(cfg.amp, device)}")

    csv_path = ckpt_dir / "losses.csv"
    with open(csv_path, "w", newline="") as fh:  # rewritten from history so a resume never duplicates rows
        w = csv.DictWriter(fh, fieldnames=("epoch", *LOSS_COLUMNS, "seconds"))
        w.writeheader()
        w.writerows(history)

    per_epoch = len(epoch_batches(N, cfg.batch_size, cfg.seed, 0)[:cfg.max_steps_per_epoch or None])
    scalars = StepLog(ckpt_dir, cfg.log_every, first_step=start_epoch * per_epoch + start_step)
    # the loader gets its own generator: creating its iterator must not draw from the global RNG,
    # or a run resumed mid-epoch would continue a different random stream
    loader_kw = dict(batch_size=None, num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    amp_mode = resolve_amp(cfg.amp, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_mode == "bf16")
    stop = _StopOnSignal()
    with stop:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            t0 = time.time()
            batches = epoch_batches(N, cfg.batch_size, cfg.seed, epoch)
            if cfg.max_steps_per_epoch:
                batches = batches[:cfg.max_steps_per_epoch]
            # a resumed, interrupted epoch skips the batches it already trained on
            done = start_step if epoch == start_epoch else 0
            sums = {k: 0.0 for k in LOSS_COLUMNS}
            if epoch == start_epoch and start_sums:
                sums.update(start_sums)
            loader = torch.utils.data.DataLoader(BatchDataset(data, batches[done:]), **loader_kw)
            bar = tqdm(loader, total=len(batches) - done, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
            for step, batch in enumerate(bar, start=done):
                x = batch["frames"].to(device, non_blocking=True)
                y = batch[cfg.dfp_key].to(device) if uses_dfp else None
                if y is not None and cfg.dfp_kind == "regression":
                    y = (y.float().flatten(2) - dfp_mean) / dfp_std  # (B, T, ...) -> (B, T, D), standardised
                with amp:
                    loss, parts = s3vae_loss(model, x, y, loss_opts, dataset_size=N, fit_critic=fitter)
                if not torch.isfinite(loss):
                    where = f"epoch {epoch + 1}, step {step + 1} (its batch: {data.describe(batches[step])})"
                    raise FloatingPointError(nonfinite_message(parts, where, last))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.lr_schedule == "cosine":  # from the global step alone, so a resumed run continues it
                    frac = (epoch * per_epoch + step) / (cfg.epochs * per_epoch)
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
                opt.step()
                for k, v in parts.items():
                    sums[k] += float(v)
                scalars.add(epoch * per_epoch + step + 1, epoch + 1, parts, opt.param_groups[0]["lr"])
                bar.set_postfix(loss=f"{parts['loss']:.1f}", refresh=False)
                if on_step is not None:
                    on_step(epoch, step, model, parts)
                if stop.signum is not None and step + 1 < len(batches):
                    # SLURM sends SIGTERM before a kill or requeue: save mid-epoch and leave
                    atomic_torch_save(_checkpoint(model, opt, fitter, device, epoch, step + 1, sums, history,
                                                  model_cfg, cfg, fingerprint), last)
                    log(f"signal {stop.signum}: saved {last} at epoch {epoch + 1}, step {step + 1}; exiting")
                    raise TrainingInterrupted(stop.signum)
            row = {"epoch": epoch + 1, **{k: sums[k] / len(batches) for k in LOSS_COLUMNS},
                   "seconds": round(time.time() - t0, 2)}
            history.append(row)
            with open(csv_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=row.keys()).writerow(row)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            atomic_torch_save(_checkpoint(model, opt, fitter, device, epoch + 1, 0, None, history, model_cfg, cfg,
                                          fingerprint),
                              last)
            if stop.signum is not None and epoch + 1 < cfg.epochs:
                log(f"signal {stop.signum}: saved {last} after epoch {epoch + 1}; exiting")
                raise TrainingInterrupted(stop.signum)

    scalars.close()
    check_unchanged(states, [*clip_shards, *label_files])
    final = {"model": model.state_dict(), "model_config": asdict(model_cfg), "train_config": asdict(cfg),
             "history": history, "dataset_size": N}
    atomic_torch_save(final, out)
    return final


# What each logged term is, for messages
TERMS = {"recon": "-log p(x|z)", "kl_f": "KL of z_f", "kl_t": "KL of z_1:T", "scc": "L_SCC", "dfp": "L_DFP",
         "mi": "L_MI", "mi_fit": "the CLUB critic's fit -log q(z_t|z_f)", "adv": "the static adversary",
         "conf": "the adversary's confusion term", "mi_grad": "L_MI's gradient norm"}


def nonfinite_message(parts: dict, where: str, checkpoint: Path) -> str:
    """Names the non-finite terms of eq. 9 at a step (they are checked before any weight changes)."""
    bad = [k for k, v in parts.items() if k != "loss" and not math.isfinite(float(v))]
    named = ", ".join(f"{TERMS.get(k, k)} ({k}={float(parts[k])})" for k in bad) or "the total"
    hint = " (L_MI: lower λ3 or raise critic_steps)" if {"mi", "mi_fit", "mi_grad"} & set(bad) else ""
    return (f"non-finite {named} at {where}{hint}; no weights were updated with it, the last good state is "
            f"{checkpoint} if it exists; all terms: " + ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items()))


class CriticFitter:
    """CLUB's q(z_t | z_f) on its own Adam: ``steps`` likelihood steps (``losses.critic_fit``) on each
    batch's detached latents before the bound reads q, as CLUB's reference code fits it several times
    per model step. Returns the last step's -log q, the critic's fit that steps.csv logs as ``mi_fit``."""

    def __init__(self, model: S3VAE, steps: int, lr: float, pairs: str):
        self.model, self.steps, self.pairs = model, steps, pairs
        self.params = list(model.critic.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr)

    def __call__(self, zf: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            for _ in range(self.steps):
                fit = critic_fit(self.model, zf, zt, self.pairs)
                if not torch.isfinite(fit):
                    raise FloatingPointError(f"non-finite {TERMS['mi_fit']} ({float(fit.detach())}): the critic "
                                             "diverged; lower critic_lr or λ3; no weights were updated with it")
                self.opt.zero_grad(set_to_none=True)
                fit.backward()
                self.opt.step()
        return fit.detach()


class StepLog:
    """Per-step scalars: every ``every`` steps, the window's mean of each loss term, the learning rate
    and steps/s go to ``ckpt_dir/steps.csv`` and to TensorBoard event files in ``ckpt_dir/tb``.
    A resumed run keeps the rows up to ``first_step`` and continues from there."""

    COLUMNS = ("step", "epoch", *LOSS_COLUMNS, "lr", "steps_per_s")

    def __init__(self, ckpt_dir: Path, every: int, first_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.path, self.every = ckpt_dir / "steps.csv", max(1, every)
        old = []
        if first_step and self.path.exists():
            old = [r for r in csv.DictReader(open(self.path)) if int(r["step"]) <= first_step]
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.COLUMNS)
            w.writeheader()
            w.writerows(old)
        self.tb = SummaryWriter(str(ckpt_dir / "tb"), purge_step=first_step or None)
        self.sums, self.n, self.t0 = {}, 0, time.perf_counter()

    def add(self, step: int, epoch: int, parts: dict, lr: float) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        self.last = (step, epoch, lr)
        if step % self.every == 0:
            self._write(step, epoch, lr)

    def _write(self, step: int, epoch: int, lr: float) -> None:
        now = time.perf_counter()
        row = {"step": step, "epoch": epoch, **{k: v / self.n for k, v in self.sums.items()}, "lr": lr,
               "steps_per_s": self.n / max(now - self.t0, 1e-9)}
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.COLUMNS).writerow({k: row.get(k, "") for k in self.COLUMNS})
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.tb.add_scalar(f"train/{k}", v, step)
        self.tb.flush()  # an interrupted run keeps what it logged
        self.sums, self.n, self.t0 = {}, 0, now

    def close(self) -> None:
        """Writes the last, partial window (a short run still gets a row) and closes the event file."""
        if self.n:
            self._write(*self.last)
        self.tb.close()


class TrainingInterrupted(Exception):
    """Raised after a signal-triggered checkpoint; the process should exit non-zero and be restarted."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}; checkpoint saved")
        self.signum = signum


class _StopOnSignal:
    """Context manager recording SIGTERM/SIGUSR1/SIGINT instead of dying, so the loop can checkpoint first
    (SLURM sends SIGTERM before a kill, Snakemake passes it on when interrupted, Ctrl-C sends SIGINT)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handle(self, signum, frame):
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _checkpoint(model, opt, fitter, device, epoch, step, sums, history, model_cfg, cfg, fingerprint) -> dict:
    """Everything a resumed run needs: ``epoch`` epochs done plus ``step`` batches of the next one."""
    ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
          "history": history, "rng_cpu": torch.get_rng_state(), "model_config": asdict(model_cfg),
          "train_config": asdict(cfg), "data": fingerprint}
    if fitter:
        ck["critic_optimizer"] = fitter.opt.state_dict()
    if sums is not None:
        ck["sums"] = dict(sums)
    if device.type == "cuda":
        ck["rng_cuda"] = torch.cuda.get_rng_state()
    return ck


class BatchDataset(torch.utils.data.Dataset):
    """A dataset whose items are whole batches (lists of clip indices), so workers read batches."""

    def __init__(self, data: ClipDataset, batches: list[list[int]]):
        self.data, self.batches = data, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return batch_of(self.data, self.batches[i])


def load_model(path: str | Path, device: str | torch.device = "cpu") -> S3VAE:
    from s3vae.utils import load_weights_only

    ck = load_weights_only(path, device)
    model = S3VAE(S3VAEConfig(**ck["model_config"])).to(device)
    model.load_state_dict(ck["model"])
    return model.eval()

