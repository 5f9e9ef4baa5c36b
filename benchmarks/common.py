"""Timing helpers shared by the benchmarks: interleaved rounds, FLOP counts, JSON lines."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str | None:
    """The repository's HEAD commit (with ``+dirty`` for uncommitted changes), or None."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def environment(device: torch.device) -> dict:
    """What a result depends on: versions, cores, threads, device, commit and machine load."""
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "threads": torch.get_num_threads(), "device": str(device), "commit": git_commit()}
    if hasattr(os, "getloadavg"):
        env["load_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 5,
                warmup: int = 2, raw: bool = False, cpu: dict | None = None
                ) -> dict[str, float] | dict[str, list]:
    """Median seconds per call of each function, alternating them round by round so that
    machine noise (turbo, other processes) hits every contender alike. The order flips
    every round (ABBA): on a busy CPU whichever runs second in a round was measured up to
    ~20 % slower (allocator / page-fault state left by the first). ``raw``: every round's
    seconds instead of the medians (for paired ratios, :func:`paired_ratio`). ``cpu``: a
    dict filled with every round's CPU seconds of this process (all its threads), which
    other jobs on a shared machine barely change."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = fns[name]
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    if raw:
        return times
    return {k: statistics.median(v) for k, v in times.items()}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a_i / b_i: calls of one round ran back to back, so a load
    change between rounds (other jobs on a shared CPU) cancels, unlike in a ratio of medians."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def write(records: list[dict], name: str = "latest.jsonl") -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def report(records: list[dict], name: str = "latest.jsonl") -> Path:
    """Print each record (without its environment) and append them all to ``results/name``."""
    for r in records:
        print(json.dumps({k: v for k, v in r.items() if k != "env"}))
    path = write(records, name)
    print(f"appended to {path}")
    return path
