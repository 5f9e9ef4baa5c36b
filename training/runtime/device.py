"""Where and in which precision to compute: device choice, autocast, CPU denormals, and driving
a step generator to its end. Every stage asks here; nothing else probes CUDA or MPS."""
from __future__ import annotations

import contextlib
from collections.abc import Generator

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU. An explicit device that is absent is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA GPU is available")
    if requested == "mps" and not (getattr(torch.backends, "mps", None)
                                   and torch.backends.mps.is_available()):
        raise RuntimeError("MPS was requested but Apple Metal is not available")
    return torch.device(requested)


def default_device_name() -> str:
    """The default for ``--device`` options: ``cuda`` where a GPU is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto`` = bf16 only on CUDA GPUs that support it (faster there; slower on CPU)."""
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_for(device: torch.device, precision: str = "auto"):
    """An autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def flush_denormals(device: torch.device | str = "cpu") -> None:
    """On CPU, treat denormal floats as zero: they can slow training steps tenfold."""
    if torch.device(device).type == "cpu":
        torch.set_flush_denormal(True)


def drain(steps: Generator):
    """Run a step generator to its end and return its value (``StopIteration.value``)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
