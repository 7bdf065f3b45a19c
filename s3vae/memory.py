"""Out of memory, said as such: a job that runs out of memory ends with one line naming the job, the limit
in force and what to change, wherever the allocation failed (importing torch, building a model, a step).

Imports nothing heavy, so that a workflow script can install the hook before it imports torch.
"""

from __future__ import annotations

import errno
import os
import resource
import sys

# How an allocation failure shows besides MemoryError (torch's CPU allocator, oneDNN, threads, the loader)
SIGNS = ("can't allocate memory", "cannot allocate memory", "could not create a primitive", "out of memory",
         "can't start new thread", "failed to map segment")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an allocation failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        if isinstance(exc, (RuntimeError, ImportError, OSError)) and any(s in str(exc).lower() for s in SIGNS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def memory_limit() -> str:
    """The memory limits this process runs under that can be read (address space, cgroup), or 'none found'."""
    found = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(f"{soft / 2**20:.0f} MiB of address space (ulimit -v)")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = open(path).read().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 2**60:
            found.append(f"{int(value) / 2**20:.0f} MiB for the job's cgroup ({path})")
    return "; ".join(found) or "none found (the machine's free memory)"


def message(job: str, exc: BaseException) -> str:
    return (f"out of memory in {job} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            f"limit in force: {memory_limit()}. Give the job more memory (Snakemake: --set-resources "
            f"<rule>:mem_mb=..., or the SLURM profile's mem_mb) or make it need less (train.batch_size, "
            f"train.preload: false)")


def name_out_of_memory(job: str) -> None:
    """Install a last-resort hook: an uncaught allocation failure ends with ``message`` after its traceback."""
    previous = sys.excepthook

    def hook(kind, exc, tb):
        previous(kind, exc, tb)
        if is_out_of_memory(exc):
            try:
                sys.stderr.write(message(job, exc) + "\n")
                sys.stderr.flush()
            except MemoryError:
                os.write(2, f"out of memory in {job}\n".encode())

    sys.excepthook = hook
