"""One checkpoint for every trainer (S3VAE, MoCoGAN, MonkeyNet, FHVAE, the judge).

``ckpt_dir/last.pt`` holds the state dicts of a run's parts (models, optimisers), the global RNG, the
shuffling generator, the progress (epochs done plus steps of the next) and the per-epoch history. It
resumes only the same run: the same key (the settings that change the result, ``run_key``), the same
input files (``utils.data_fingerprint``) and no more epochs than asked; anything else is stale, and the
trainer either refuses (``on_stale="error"``) or starts over and says so (``"restart"``, the workflow's
choice: Snakemake reruns a rule precisely when its settings or inputs changed). Writes are atomic, and
files are read with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from s3vae.utils import atomic_torch_save, data_fingerprint, file_states, load_weights_only

# Settings that may change between a run and its resumption: they do not change the result.
RUN_ONLY = ("epochs", "device", "threads", "preload", "num_workers", "amp", "channels_last", "log_every")


def run_key(train_cfg, keep: tuple[str, ...] = ()) -> dict:
    """A training config's settings that change the result (``RUN_ONLY`` left out unless in ``keep``)."""
    return {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in RUN_ONLY or k in keep}


def load_checkpoint(path: str | Path) -> dict:
    return load_weights_only(path, "cpu")


@dataclass
class Progress:
    """Where a run stands: ``epoch`` epochs done plus ``step`` batches of the next (with their loss
    sums), the history rows so far, and the shuffling generator's state at the epoch's start and now."""

    epoch: int = 0
    step: int = 0
    sums: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    gen_epoch: torch.Tensor | None = None
    gen: torch.Tensor | None = None


class Checkpoint:
    """``ckpt_dir/last.pt`` of one run; ``key`` is a plain dict of the settings that change the result,
    ``inputs`` the files it trains on."""

    def __init__(self, ckpt_dir, key: dict, inputs: list[str], epochs: int, log=print, on_stale: str = "error"):
        if on_stale not in ("error", "restart"):
            raise ValueError(f"on_stale must be 'error' or 'restart', got {on_stale!r}")
        self.dir = Path(ckpt_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "last.pt"
        self.key, self.inputs, self.epochs, self.log, self.on_stale = key, list(inputs), epochs, log, on_stale
        self.fingerprint = data_fingerprint(self.inputs)
        self.states = file_states(self.inputs)

    def _stale_reason(self, ck: dict) -> str | None:
        if ck.get("key") != self.key:
            return "a different configuration"
        if ck.get("data") != self.fingerprint:
            return "different training data (shards rebuilt or changed since)"
        if ck["epoch"] > self.epochs:
            return f"more epochs ({ck['epoch']}) than the {self.epochs} asked"
        return None

    def _discard(self, what: str) -> None:
        if self.on_stale == "error":
            raise ValueError(f"{self.path}: {what}; delete {self.dir} to start over")
        self.log(f"{self.path}: {what}; starting over")
        self.path.unlink()

    def restore(self, parts: dict, device) -> Progress:
        """Load a matching checkpoint into ``parts`` (name -> module or optimiser) and the global RNG;
        a fresh ``Progress`` when there is none or it is stale."""
        if not self.path.exists():
            return Progress()
        try:
            ck = load_checkpoint(self.path)
        except Exception as e:  # truncated or corrupt file (a crash during a copy, a full disk)
            self._discard(f"unreadable checkpoint ({type(e).__name__})")
            return Progress()
        if why := self._stale_reason(ck):
            self._discard(f"checkpoint was written with {why}")
            return Progress()
        for name, part in parts.items():
            part.load_state_dict(ck[name])
        torch.set_rng_state(ck["rng_cpu"])
        if torch.device(device).type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state(ck["rng_cuda"])
        self.log(f"resumed from {self.path} at epoch {ck['epoch']}, step {ck['step']}")
        return Progress(ck["epoch"], ck["step"], ck["sums"], ck["history"], ck["gen_epoch"], ck["gen"])

    def save(self, parts: dict, progress: Progress, device) -> None:
        ck = {**{name: part.state_dict() for name, part in parts.items()}, "rng_cpu": torch.get_rng_state(),
              **dataclasses.asdict(progress), "key": self.key, "data": self.fingerprint}
        if torch.device(device).type == "cuda":
            ck["rng_cuda"] = torch.cuda.get_rng_state()
        atomic_torch_save(ck, self.path)

    def check_unchanged(self) -> None:
        """Refuse to yield a model when a training file was rewritten during training (mixed data)."""
        changed = [a[0] for a, b in zip(self.states, file_states(self.inputs)) if a != b]
        if changed:
            from s3vae.data import ShardError

            raise ShardError(f"{', '.join(changed)}: changed while training (another process rewrote it), so the "
                             "model saw mixed data and was not written; rerun once that process is done")


class TrainingInterrupted(Exception):
    """Raised after a signal-triggered checkpoint; the process should exit non-zero and be restarted."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}; checkpoint saved")
        self.signum = signum


class StopOnSignal:
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
