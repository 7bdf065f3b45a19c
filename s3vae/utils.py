"""Small shared helpers: devices, seeding, atomic saves, config dataclasses from dicts."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import random
import typing
from pathlib import Path

import numpy as np
import torch


def pick_device(requested: str | torch.device = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; the rule asks for a GPU but must run without one."""
    if str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks (checkpoints can be hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def adam(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam as every trainer uses it: the fused kernel (one pass over all parameters per step) where the
    parameters' device has one (CPU, CUDA), else the multi-tensor one. Same update rule either way."""
    params = list(params)
    dev = {p.device.type for p in params}
    fused = dev <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused or None)


class WeightAverage:
    """An exponential moving average of a model's weights and float buffers (Polyak averaging), bias-corrected
    as Adam's moments are: after the k-th optimiser step, avg_k = sum_i decay^(k-i) w_i / sum_i decay^(k-i),
    so a run of few steps averages its own steps, never the initial weights. ``module`` is the averaged copy."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """avg_k = avg_(k-1) + t_k (w_k - avg_(k-1)), t_k = (1 - decay) / (1 - decay^k): t_1 = 1 copies w_1."""
        self.updates += 1
        weight = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in pairs:
            if not a.is_floating_point():  # step counters
                a.copy_(c)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = state["updates"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (message names the file and why)."""


def load_weights_only(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with errors that name the file: a file holding Python objects
    other than tensors and plain data (which unpickling could run as code) is refused, never loaded."""
    import pickle
    import re

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported operand" in text or "invalid load key" in text:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a damaged one; rebuild it (delete it "
                                  f"and rerun the rule that writes it)") from None
        found = re.search(r"GLOBAL ([\w.<>]+)|(?:class|function) ([\w.<>]+)", text)
        what = f" ({next(g for g in found.groups() if g)})" if found else ""
        raise CheckpointError(
            f"{path}: refused for safety: it holds Python objects other than tensors and plain data{what}, and "
            f"loading those could run code. The pipeline writes only tensors, numbers, strings, lists and dicts; "
            f"this file comes from other code or was altered. Rebuild it (delete it and rerun the rule that "
            f"writes it)") from None
    except (RuntimeError, EOFError) as e:
        if isinstance(e, RuntimeError) and "PytorchStreamReader" not in str(e) and "zip archive" not in str(e):
            raise  # not the file's fault (e.g. a CUDA map_location on a machine without CUDA)
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'empty file'}); rebuild it (delete it and "
                              f"rerun the rule that writes it)") from e


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """Save via a temporary file and rename, so a kill never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX512-BF16): bf16 autocast is faster
    there, and slower where oneDNN must emulate it."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: trust torch's report of the vector unit
        return torch.backends.cpu.get_cpu_capability() == "AMX"
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a CUDA card that supports it or a CPU with native bfloat16, else ``none``."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if device.type == "cpu" and native_bf16_cpu() else "none"


def check_literals(obj) -> None:
    """Raises ValueError for a dataclass field typed ``Literal[...]`` whose value is not one of them."""
    for name, hint in typing.get_type_hints(type(obj)).items():
        allowed = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        if allowed and getattr(obj, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(obj, name)!r}")


def from_dict(cls, d: dict | None):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with a clear error."""
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)


def redirect_output(log_path: str | os.PathLike) -> None:
    """What a workflow script does first: send this process's stdout and stderr (prints, tqdm,
    tracebacks) to ``log_path``, and stop the job when Snakemake is gone (``stop_when_orphaned``)."""
    import sys

    fh = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = fh
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    stop_when_orphaned()


def stop_when_orphaned(interval: float = 2.0) -> None:
    """Send this process SIGTERM once its parent has died (it is re-parented): a job whose Snakemake was
    killed must not run on unattended. Training checkpoints on SIGTERM; other jobs just end."""
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


def file_states(paths: list[str]) -> list[list]:
    """(path, size, mtime, inode) of each file: what changes when a shard is rewritten or replaced."""
    return [[str(p), st.st_size, st.st_mtime_ns, st.st_ino] for p in paths for st in [Path(p).stat()]]


def data_fingerprint(paths: list[str]) -> str:
    """Identity of input files (path, size, mtime): a checkpoint resumes only on the same data."""
    import json

    return hashlib.sha256(json.dumps([r[:3] for r in file_states(paths)]).encode()).hexdigest()


def save_trained(out: str | os.PathLike, model, cfg, train_cfg, history: list) -> dict:
    """A comparison system's final file: weights, both configs and the per-epoch history (``load_trained``)."""
    final = {"model": model.state_dict(), "config": dataclasses.asdict(cfg),
             "train_config": dataclasses.asdict(train_cfg), "history": history}
    atomic_torch_save(final, out)
    return final


# Config fields renamed since files were written: old name -> new name (files keep loading).
RENAMED_FIELDS = {"feat_in": "audio_features"}


def saved_config(config_cls, d: dict):
    """``config_cls`` from a config dict a checkpoint holds, written under today's or an earlier field name."""
    d = {RENAMED_FIELDS.get(k, k): v for k, v in d.items()}
    if hasattr(config_cls, "from_saved"):
        return config_cls.from_saved(d)
    return config_cls(**d)


def load_trained(path: str | os.PathLike, model_cls, config_cls, device="cpu"):
    """A trained file (``{"model": state dict, "config": dict, ...}``: a comparison system, the judge) as a
    model in eval mode; ``weights_only`` loading."""
    ck = load_weights_only(path, device)
    model = model_cls(saved_config(config_cls, ck["config"])).to(device)
    model.load_state_dict(ck["model"])
    return model.eval()
