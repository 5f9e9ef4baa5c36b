"""CPU thread defaults that never spin: call :func:`configure_threads` before torch is imported.

OpenMP's default wait policy keeps idle worker threads spinning; on a CPU shared with other
jobs (a laptop, a CI runner, a cluster node) that made every entry point 9-14x slower. Every
entry point (``python -m training.*``, ``napari-vismae``, the plugin, the test suite) calls
:func:`configure_threads` first: it sets ``OMP_WAIT_POLICY=PASSIVE`` and a thread count equal to
the CPUs this process may use, unless the user already set them. This module does not import
torch (the OpenMP runtime reads the environment once, when torch loads it).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

#: Environment variables read by the OpenMP / BLAS runtimes torch loads.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def threads_from_argv(argv: Sequence[str]) -> int | None:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv`` (None if absent or invalid)."""
    argv = list(argv)
    for i, a in enumerate(argv):
        value = None
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        if value is not None:
            try:
                return int(value) if int(value) > 0 else None
            except ValueError:
                return None
    return None


def configure_threads(threads: int | None = None, argv: Sequence[str] | None = None) -> int:
    """Set passive OpenMP waiting and the thread count; returns the thread count in effect.

    ``threads`` (or ``--threads N`` found in ``argv``) is an explicit request and wins over the
    environment; otherwise ``OMP_NUM_THREADS`` is kept when the user set it, else set to
    :func:`available_cpus`. ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` unless already set. If
    torch is already imported, an explicit request also sets its intra-op thread count (the
    wait policy can then no longer change: call this first); defaults leave it alone.
    """
    if threads is None and argv is not None:
        threads = threads_from_argv(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None and threads > 0:
        n = int(threads)
        for var in THREAD_VARS:
            os.environ[var] = str(n)
    else:
        try:
            n = int(os.environ["OMP_NUM_THREADS"])
        except (KeyError, ValueError):
            n = available_cpus()
            os.environ["OMP_NUM_THREADS"] = str(n)
        for var in THREAD_VARS[1:]:
            os.environ.setdefault(var, str(n))
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)  # an explicit request; defaults never override a running torch
    return n


THREADS_HELP = ("CPU threads for torch (default: $OMP_NUM_THREADS, else the CPUs this process "
                "may use); OpenMP waits passively unless $OMP_WAIT_POLICY says otherwise")
