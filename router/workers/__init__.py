"""`workers: N`: N data-path processes share each port under one supervisor.

The control plane is not multiplied: the supervisor (`supervisor.py`) owns the
namers, interpreters, transformers and the admin server, exactly as a
one-process router does, and each worker (`worker.py`) runs only the data
path (servers bound with SO_REUSEPORT, clients, balancers, policy). A worker
binds through a local mirror (`mirror.py`) that the supervisor keeps current
over a Unix socket (`ipc.py`): a request never waits on that socket unless its
name was never bound in that worker (as it would wait for a namer's first
answer in one process). Metrics are pulled from the workers when the admin is
asked and merged (`merge.py`) so the process reads as one router.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

MAX_WORKERS = 64


def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask, as `nproc` counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_workers(value: Any) -> int | None:
    """The `workers:` value as a count, or None when it is neither a count nor `auto`."""
    if value == "auto":
        return min(MAX_WORKERS, cpus_available())
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if 1 <= value <= MAX_WORKERS:
        return value
    return None


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of process `pid` (Linux /proc), None when it cannot be read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_startup_memory() -> int | None:
    """Once a process has started: collect the garbage of import and config time and give
    the C heap's free pages back to the OS (glibc's `malloc_trim`; freed memory otherwise
    stays resident: ~4 MB of a worker's 38). The bytes of RSS it freed, None without glibc."""
    gc.collect()
    before = rss_bytes(os.getpid())
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: its heap keeps what it keeps
        log.debug("no malloc_trim in this C library; startup memory not released")
        return None
    trim(0)
    after = rss_bytes(os.getpid())
    return before - after if before is not None and after is not None else None
