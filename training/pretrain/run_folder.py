"""A pretraining run folder's rules: one run per folder, no leftovers of interrupted writes,
and failures of the disk named as such.

* A new run into a folder that already holds one is refused unless ``--resume`` (continue
  it) or ``--overwrite`` (start over: its states, log, samples and exported model go).
* Temporaries of writes interrupted by a crash or a kill (``.step-*.pt.tmp-*``, half-made
  ``model/`` folders) are removed at every start and resume.
* The folder is checked to be writable before any work starts.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from training.pretrain.resume import list_states
from training.runtime.atomic import check_writable, no_space_left, remove_stale_temporaries

log = logging.getLogger("training.pretrain")

RUN_FILES = ("metrics.jsonl", "config.json")
RUN_DIRS = ("checkpoints", "model", "samples", "tensorboard")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message names it and says what to do."""


def run_contents(out: Path) -> list[str]:
    """What in ``out`` belongs to an earlier run (empty list: a fresh folder)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    found += [f"{name}/" for name in RUN_DIRS
              if (out / name).is_dir() and any((out / name).iterdir())]
    return found


def prepare_run_folder(out: Path, resume: str, overwrite: bool) -> None:
    """Check and tidy ``out`` before a run starts (main process only)."""
    out = Path(out)
    try:
        check_writable(out, "--output folder")
    except PermissionError as e:
        raise RunFolderError(str(e)) from None
    removed = []
    for d in (out, out / "checkpoints", out / "samples"):
        removed += remove_stale_temporaries(d)
    if removed:
        log.info("removed %d temporary file(s) of interrupted writes in %s: %s", len(removed), out,
                 ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    existing = run_contents(out)
    if resume or not existing:
        return
    if not overwrite:
        raise RunFolderError(
            f"--output {out} already holds a run ({', '.join(existing)}); pass --resume auto to "
            "continue it, --overwrite to start over (its states, log, samples and model are "
            "deleted), or choose another --output")
    log.warning("--overwrite: deleting the earlier run in %s (%s)", out, ", ".join(existing))
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def describe_write_failure(error: BaseException, path) -> str:
    """``no space left on <path>`` for a full disk, else the error itself."""
    if no_space_left(error, path):
        return f"no space left on {path}"
    return f"cannot write {path} ({type(error).__name__}: {error})"


def last_state_note(ckpt_dir: Path) -> str:
    states = list_states(ckpt_dir)
    return (f"the last good training state {states[-1]} is intact (resume with --resume auto)"
            if states else "no training state was saved yet")
