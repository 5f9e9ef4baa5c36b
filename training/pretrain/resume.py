"""Training state checkpoints for exact resume: written atomically, the last K kept.

A state file holds model, optimizer, scheduler and grad-scaler states, RNG states,
the epoch and the position inside it, and the run's configuration. Only plain
data and tensors are stored, so it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from training.runtime.atomic import atomic_path, no_space_left

log = logging.getLogger(__name__)
STATE_PATTERN = re.compile(r"^step-(\d{9})\.pt$")


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_path(directory: Path, global_step: int) -> Path:
    return Path(directory) / f"step-{global_step:09d}.pt"


def list_states(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if STATE_PATTERN.match(p.name))


def save_state(directory: Path, state: dict, keep_last: int) -> Path | None:
    """Write ``state`` as ``step-N.pt``; prune older ones. A failed write (a full disk:
    an OSError, or torch's RuntimeError "file write failed") is logged as
    "no space left on <folder>", leaves every earlier state intact and no temporary file;
    returns None then."""
    path = state_path(directory, state["global_step"])
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as e:
        reason = f"no space left on {Path(directory)}" if no_space_left(e, directory) else str(e)
        log.error("could not save training state %s: %s (%s: %s); earlier states are intact",
                  path.name, reason, type(e).__name__, str(e)[:200])
        return None
    for old in list_states(directory)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_state(path: Path) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read training state ({type(e).__name__}: {e})") from None
    missing = {"model", "optimizer", "global_step", "epoch", "config"} - set(state)
    if missing:
        raise ValueError(f"{path}: not a napari-vismae training state (missing {sorted(missing)})")
    return state


def find_resume(resume: str, directory: Path) -> Path | None:
    """'auto' -> newest state in ``directory`` (or None); else the given file or folder."""
    if resume == "auto":
        states = list_states(directory)
        return states[-1] if states else None
    p = Path(resume)
    if p.is_dir():
        states = list_states(p) or list_states(p / "checkpoints")
        if not states:
            raise FileNotFoundError(f"--resume {p}: no step-*.pt training state in that folder")
        return states[-1]
    if not p.is_file():
        raise FileNotFoundError(f"--resume {p}: no such file")
    return p
