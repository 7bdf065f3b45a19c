"""The training loop every trainer shares (S3VAE, MoCoGAN, MonkeyNet, FHVAE, the judge), after MAE's
``engine_pretrain``: a trainer builds its data, parts and one-batch ``step``; ``fit`` walks the epochs
from a restored ``Progress``, and ``train_one_epoch`` batches, steps, logs and checkpoints.

Determinism: epoch ``e`` shuffles with a generator seeded ``seed * salt + e`` (``salt=None``: one generator
seeded ``seed`` for the whole run); a step may draw from that generator too (frame pairs, blur). The
checkpoint holds its state and the global RNG's, so a run resumed mid-epoch continues the same random
streams as an uninterrupted one. SIGTERM/SIGUSR1/SIGINT finish the current step, checkpoint and raise
``TrainingInterrupted``.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from s3vae.checkpoint import Checkpoint, Progress, StopOnSignal, TrainingInterrupted
from s3vae.data import ClipDataset, batch_of


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True) -> list[list[int]]:
    """Clip indices of one epoch in batches: a permutation drawn from ``generator``."""
    perm = torch.randperm(n, generator=generator).tolist()
    end = n - batch_size + 1 if drop_last else n
    return [perm[i:i + batch_size] for i in range(0, end, batch_size)]


class BatchDataset(torch.utils.data.Dataset):
    """A dataset whose items are whole batches (lists of clip indices), so workers read batches."""

    def __init__(self, data: ClipDataset, batches: list[list[int]]):
        self.data, self.batches = data, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return batch_of(self.data, self.batches[i])


def batch_loader(data: ClipDataset, batches: list[list[int]], num_workers: int = 0, seed: int = 0):
    # its own generator: creating its iterator must not draw from the global RNG, or a run resumed
    # mid-epoch would continue a different random stream
    return torch.utils.data.DataLoader(BatchDataset(data, batches), batch_size=None, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(seed))


@dataclass
class Schedule:
    """How a run walks its data."""

    epochs: int
    batch_size: int
    seed: int
    salt: int | None = 1000        # epoch e shuffles with seed * salt + e; None: one generator for the run
    drop_last: bool = True
    max_steps: int = 0             # >0 caps the steps of an epoch (smoke tests)
    num_workers: int = 0

    def batches(self, n: int, g: torch.Generator) -> list[list[int]]:
        return epoch_batches(n, self.batch_size, g, self.drop_last)[:self.max_steps or None]

    def steps(self, n: int) -> int:
        """Batches in an epoch of ``n`` clips."""
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return min(full, self.max_steps) if self.max_steps else full


class At(NamedTuple):
    """Where a step is: the epoch and step (from 0), the batch's clip indices, the run's shuffling
    generator and the steps of an epoch (for a global step)."""

    epoch: int
    step: int
    indices: list[int]
    gen: torch.Generator
    per_epoch: int

    @property
    def global_step(self) -> int:
        """Steps of the run before this one (from 0)."""
        return self.epoch * self.per_epoch + self.step


Step = Callable[[dict, At], dict]   # one optimiser step on a batch -> the terms to log (floats)


def fit(name: str, data: ClipDataset, parts: dict, step: Step, ckpt: Checkpoint, sched: Schedule,
        progress: Progress, device, log=print) -> list[dict]:
    """Train from ``progress`` (``ckpt.restore``) to ``sched.epochs``; returns the per-epoch history.
    Also writes ``ckpt.dir/losses.csv`` (one row per epoch, rewritten from the history on a resume)."""
    if sched.drop_last and len(data) < sched.batch_size:
        raise ValueError(f"{len(data)} training clips is fewer than one batch of {sched.batch_size}")
    write_losses(ckpt.dir / "losses.csv", progress.history)
    g = torch.Generator().manual_seed(sched.seed)
    if progress.gen is not None and progress.step == 0:
        g.set_state(progress.gen)           # one generator for the run: where the last epoch left it
    with StopOnSignal() as stop:
        for epoch in range(progress.epoch, sched.epochs):
            progress = train_one_epoch(name, data, parts, step, ckpt, sched, epoch, g, progress, stop, device, log)
    ckpt.check_unchanged()
    return progress.history


def train_one_epoch(name: str, data: ClipDataset, parts: dict, step: Step, ckpt: Checkpoint, sched: Schedule,
                    epoch: int, g: torch.Generator, progress: Progress, stop: StopOnSignal, device, log=print
                    ) -> Progress:
    """One epoch (or its rest, when ``progress`` stopped inside it); checkpoints at its end."""
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.train()
    t0 = time.time()
    resumed = epoch == progress.epoch and progress.step > 0   # mid-epoch: the same batches, then on from there
    if resumed:
        g.set_state(progress.gen_epoch)
    elif sched.salt is not None:
        g.manual_seed(sched.seed * sched.salt + epoch)
    gen_epoch = g.get_state()
    batches = sched.batches(len(data), g)
    done, sums = 0, {}
    if resumed:
        g.set_state(progress.gen)
        done, sums = progress.step, dict(progress.sums)
    bar = tqdm(batch_loader(data, batches[done:], sched.num_workers, sched.seed), total=len(batches) - done,
               desc=f"{name} epoch {epoch + 1}/{sched.epochs}", file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for i, batch in enumerate(bar, start=done):
        terms = step(batch, At(epoch, i, batches[i], g, len(batches)))
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if stop.signum is not None and i + 1 < len(batches):
            # SLURM sends SIGTERM before a kill or requeue: save mid-epoch and leave
            ckpt.save(parts, Progress(epoch, i + 1, sums, progress.history, gen_epoch, g.get_state()), device)
            log(f"signal {stop.signum}: saved {ckpt.path} at epoch {epoch + 1}, step {i + 1}; exiting")
            raise TrainingInterrupted(stop.signum)
    row = {"epoch": epoch + 1, **{k: v / len(batches) for k, v in sums.items()}, "seconds": round(time.time() - t0, 2)}
    history = [*progress.history, row]
    write_losses(ckpt.dir / "losses.csv", history)
    log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    progress = Progress(epoch + 1, 0, {}, history, None, g.get_state())
    ckpt.save(parts, progress, device)
    if stop.signum is not None and epoch + 1 < sched.epochs:
        log(f"signal {stop.signum}: saved {ckpt.path} after epoch {epoch + 1}; exiting")
        raise TrainingInterrupted(stop.signum)
    return progress


def write_losses(path, history: list[dict]) -> None:
    """``losses.csv``: one row per epoch, written whole from the history (a resume never duplicates rows)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if history:
            w.writerow(history[0].keys())
            w.writerows(r.values() for r in history)


def prelude(threads: int, device: str) -> torch.device:
    """What every trainer does first: its CPU threads (0: torch's default) and its device."""
    from s3vae.utils import pick_device

    if threads:
        torch.set_num_threads(threads)
    return pick_device(device)


def fit_system(name: str, data: ClipDataset, model: torch.nn.Module, optimizers: dict, step: Step, out, ckpt_dir,
               cfg, tcfg, inputs: list[str], device, log=print) -> dict:
    """A comparison system's run: restore (a stale checkpoint starts over, and says so), ``fit`` with
    per-epoch shuffling seeded ``seed * 1000 + epoch``, and the final file (``utils.save_trained``)."""
    from s3vae.checkpoint import run_key
    from s3vae.utils import save_trained

    ckpt = Checkpoint(ckpt_dir, {"model": dataclasses.asdict(cfg), "train": run_key(tcfg)}, inputs, tcfg.epochs,
                      log, on_stale="restart")
    parts = {"model": model, **optimizers}
    progress = ckpt.restore(parts, device)
    history = fit(name, data, parts, step, ckpt, Schedule(tcfg.epochs, tcfg.batch_size, tcfg.seed), progress,
                  device, log)
    return save_trained(out, model, cfg, tcfg, history)
