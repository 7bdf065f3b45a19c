"""Training S3VAE: ``setup`` builds the data, model and optimisers, ``checkpoint.Checkpoint`` restores a
run, and ``engine.fit`` walks the epochs with eq. 9's ``make_step`` (``train`` ties them together; called
by the workflow's ``train_model`` rule and by ``benchmarks/quality_curve.py``).

A run writes ``ckpt_dir/last.pt`` after every epoch (and mid-epoch on SIGTERM), ``ckpt_dir/losses.csv``
and ``ckpt_dir/steps.csv`` (with TensorBoard events) as it goes; a killed run started again with the
same arguments resumes to the weights an uninterrupted run would have. The final ``out`` file holds
the weights and both configs, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from s3vae.checkpoint import Checkpoint, TrainingInterrupted, load_checkpoint, run_key  # noqa: F401 (re-exported)
from s3vae.data import ClipDataset
from s3vae.engine import At, Schedule, fit, prelude
from s3vae.losses import LossOptions, critic_fit, s3vae_loss
from s3vae.model import S3VAE, S3VAEConfig
from s3vae.utils import WeightAverage, adam, atomic_torch_save, check_literals, resolve_amp, seed_everything

LOSS_COLUMNS = ("loss", "recon", "kl_f", "kl_t", "scc", "dfp", "mi", "mi_grad", "mi_fit", "adv", "conf")


@dataclass
class TrainConfig(LossOptions):
    """eq. 9's options (``LossOptions``: the λ's, the estimator, the reconstruction) and how to train."""

    epochs: int = 1000                 # App. D
    batch_size: int = 16               # App. D
    lr: float = 1e-3                   # App. D, Adam(0.9, 0.999)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # App. D; cosine: lr (1 + cos(pi s / S)) / 2 at step s of S
    critic_steps: int = 5              # club: steps of q's own Adam per model step (0: one step of the model's)
    critic_lr: float = 1e-4            # club: that optimiser's learning rate
    mi_warmup_steps: int = 0           # λ3 rises linearly from 0 over these model steps (0: constant)
    ema_decay: float = 0.0             # >0: the saved model is this moving average of the weights (0: the last step's)
    dfp_key: str = "flow_labels"       # which pseudo-label dataset L_DFP reads
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


def model_input(model_cfg: S3VAEConfig) -> dict:
    """The stored frame shape this model reads, for ``ClipDataset`` to check each shard against when opened."""
    if model_cfg.modality == "audio":
        d = model_cfg.audio_features
        return {"clip_shape": (d,), "expected": f"model audio_features = {d}"}
    size, c = model_cfg.image_size, model_cfg.channels
    return {"clip_shape": (size, size, c), "expected": f"model image_size = {size}, channels = {c}"}


def regression_stats(values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-signal mean and std of regression DFP targets over the training set (NaN rows ignored).

    Landmark gaps are ~0.1 with a std of ~0.01 and velocities are in pixels: L_DFP regresses them
    standardised, so that λ2 means the same for every signal.
    """
    flat = values.reshape(-1, int(np.prod(values.shape[2:]))).astype(np.float64)  # (N, T, ...) -> (N*T, D)
    mean, std = np.nanmean(flat, 0), np.nanstd(flat, 0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.maximum(std, 1e-6), dtype=torch.float32)


@dataclass
class Run:
    """What ``setup`` builds: the data, the parts a checkpoint holds, and what a step needs."""

    data: ClipDataset
    inputs: list[str]
    model: S3VAE
    opt: torch.optim.Optimizer
    fitter: "CriticFitter | None"
    device: torch.device
    dfp_stats: tuple | None
    average: WeightAverage | None = None

    @property
    def parts(self) -> dict:
        parts = {"model": self.model, "optimizer": self.opt}
        if self.fitter:
            parts["critic_optimizer"] = self.fitter.opt
        if self.average:
            parts["weight_average"] = self.average
        return parts

    @property
    def result(self) -> S3VAE:
        """The weights a run yields: the moving average where ``ema_decay`` is set, else the last step's."""
        return self.average.module if self.average else self.model


def setup(clip_shards: list[str], label_shards: dict[str, list[str]], model_cfg: S3VAEConfig, cfg: TrainConfig,
          log=print) -> Run:
    """The data (shards checked against the model), the seeded model, its optimiser and CLUB's critic fitter."""
    device = prelude(cfg.threads, cfg.device)
    uses_dfp = cfg.lambda_dfp > 0 or cfg.lambda_adv > 0
    if cfg.lambda_mi > 0 and cfg.mi_estimator == "club" and model_cfg.mi_critic != "club":
        raise ValueError("mi_estimator 'club' needs the model's q(z_t | z_f): set model mi_critic: club")
    data = ClipDataset(clip_shards, label_shards if uses_dfp else {}, preload=cfg.preload, **model_input(model_cfg))
    label_files = [p for k in sorted(data.label_shards) for p in data.label_shards[k]]
    dfp_stats = None
    if uses_dfp and cfg.dfp_kind == "regression":
        stored = cfg.dfp_key if cfg.dfp_key in data.label_shards else f"labels/{cfg.dfp_key}"  # pseudo or GT
        dfp_stats = tuple(t.to(device) for t in regression_stats(data.arrays(stored)))
        log(f"L_DFP regresses {cfg.dfp_key} standardised: mean {dfp_stats[0].tolist()}, std {dfp_stats[1].tolist()}")
    seed_everything(cfg.seed)
    model = S3VAE(model_cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fitter = None
    if cfg.lambda_mi > 0 and cfg.mi_estimator == "club" and cfg.critic_steps > 0:
        fitter = CriticFitter(model, cfg.critic_steps, cfg.critic_lr, cfg.mi_pairs)
    critic = set(fitter.params) if fitter else set()
    opt = adam([p for p in model.parameters() if p not in critic], lr=cfg.lr)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    return Run(data, [*clip_shards, *label_files], model, opt, fitter, device, dfp_stats, average)


def make_step(run: Run, cfg: TrainConfig, ckpt: Checkpoint, scalars: "StepLog", on_step=None):
    """eq. 9's optimiser step on one batch (``engine.Step``): a non-finite loss stops before any weight
    changes, naming its terms and its batch's clips."""
    uses_dfp = cfg.lambda_dfp > 0 or cfg.lambda_adv > 0
    loss_opts = LossOptions.of(cfg)
    amp = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=resolve_amp(cfg.amp, run.device) == "bf16")
    opt, N = run.opt, len(run.data)

    def step(batch: dict, at: At) -> dict:
        x = batch["frames"].to(run.device, non_blocking=True)
        y = batch[cfg.dfp_key].to(run.device) if uses_dfp else None
        if y is not None and run.dfp_stats is not None:
            y = (y.float().flatten(2) - run.dfp_stats[0]) / run.dfp_stats[1]  # (B, T, ...) -> (B, T, D), standardised
        opts = loss_opts
        if cfg.mi_warmup_steps > 0:  # from the global step alone, so a resumed run continues the ramp
            ramp = min(1.0, (at.global_step + 1) / cfg.mi_warmup_steps)
            opts = replace(loss_opts, lambda_mi=loss_opts.lambda_mi * ramp)
        with amp:
            loss, parts = s3vae_loss(run.model, x, y, opts, dataset_size=N, fit_critic=run.fitter)
        if not torch.isfinite(loss):
            where = f"epoch {at.epoch + 1}, step {at.step + 1} (its batch: {run.data.describe(at.indices)})"
            raise FloatingPointError(nonfinite_message(parts, where, ckpt.path))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.lr_schedule == "cosine":  # from the global step alone, so a resumed run continues it
            frac = at.global_step / (cfg.epochs * at.per_epoch)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        opt.step()
        if run.average:
            run.average.update(run.model)
        scalars.add(at.global_step + 1, at.epoch + 1, parts, opt.param_groups[0]["lr"])
        if on_step is not None:
            on_step(at.epoch, at.step, run.model, parts)
        return {k: float(parts.get(k, 0.0)) for k in LOSS_COLUMNS}

    return step


def train(clip_shards: list[str], label_shards: dict[str, list[str]], out: str | Path, ckpt_dir: str | Path,
          model_cfg: S3VAEConfig, cfg: TrainConfig, log=print, on_step=None, on_stale: str = "error") -> dict:
    """Train, resuming from ``ckpt_dir/last.pt`` (``checkpoint.Checkpoint``); returns the final weights and history.

    A checkpoint of other settings or data, or of more epochs than asked, is stale: ``on_stale="error"``
    refuses (ValueError naming it), ``"restart"`` starts over (the workflow's choice).
    ``on_step(epoch, step, model, parts)`` is called after every optimiser step (progress hooks, quality curves, tests).
    SIGTERM/SIGUSR1/SIGINT make the loop finish its current step, checkpoint, and raise TrainingInterrupted.
    """
    run = setup(clip_shards, label_shards, model_cfg, cfg, log)
    keep = ("epochs",) if cfg.lr_schedule != "constant" else ()  # the schedule spans all the epochs
    ckpt = Checkpoint(ckpt_dir, {"model": asdict(model_cfg), "train": run_key(cfg, keep)}, run.inputs, cfg.epochs,
                      log, on_stale)
    progress = ckpt.restore(run.parts, run.device)
    log(f"training on {run.device} with {len(run.data)} clips, {sum(p.numel() for p in run.model.parameters())} "
        f"parameters, torch threads {torch.get_num_threads()}, autocast {resolve_amp(cfg.amp, run.device)}")
    sched = Schedule(cfg.epochs, cfg.batch_size, cfg.seed, salt=100003, max_steps=cfg.max_steps_per_epoch,
                     num_workers=cfg.num_workers)
    per_epoch = sched.steps(len(run.data))
    scalars = StepLog(ckpt.dir, cfg.log_every, first_step=progress.epoch * per_epoch + progress.step)
    history = fit("s3vae", run.data, run.parts, make_step(run, cfg, ckpt, scalars, on_step), ckpt, sched, progress,
                  run.device, log)
    scalars.close()
    final = {"model": run.result.state_dict(), "model_config": asdict(model_cfg), "train_config": asdict(cfg),
             "history": history, "dataset_size": len(run.data)}
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
        self.opt = adam(self.params, lr=lr)

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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> S3VAE:
    from s3vae.utils import load_weights_only, saved_config

    ck = load_weights_only(path, device)
    model = S3VAE(saved_config(S3VAEConfig, ck["model_config"])).to(device)
    model.load_state_dict(ck["model"])
    return model.eval()

