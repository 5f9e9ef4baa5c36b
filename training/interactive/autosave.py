"""Never lose a correction: atomic autosave of a study's edited labels and corrected slices.

Files live in a work folder next to the model store (``<user model folder>/../work``),
one ``<digest of the study key>.npz`` per study, written to a temporary file and
renamed (:mod:`training.runtime.atomic`), so a crash mid-write leaves the previous save.
The file holds the labels (compressed), the corrected slice indices, the
classification tags, the study key and the save time; nothing else about the
study (no names).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.interactive.corrections import CorrectionSet, key_digest
from training.runtime.atomic import atomic_path


def work_dir_for(model_dir: str | Path) -> Path:
    """The work folder beside a model folder."""
    return Path(model_dir).expanduser().resolve().parent / "work"


@dataclass
class SavedCorrections:
    key: str
    labels: np.ndarray | None
    corrected: list[int]
    tags: dict[int, int]
    saved_at: float  # time.time()
    path: Path

    def apply(self, cs: CorrectionSet) -> None:
        """Copy the saved corrections into ``cs`` (labels replaced, slices and tags merged)."""
        if self.labels is not None:
            if cs.labels is not None and cs.labels.shape != self.labels.shape:
                raise ValueError(f"saved labels have shape {self.labels.shape}, the study "
                                 f"{cs.labels.shape}")
            cs.labels = self.labels.copy()
        cs.corrected |= set(self.corrected)
        cs.tags.update(self.tags)


class Autosave:
    """Atomic save/restore of corrections by study key (thread-safe)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.root / f"{key_digest(key)}.npz"

    def save(self, cs: CorrectionSet) -> Path:
        meta = {"key": cs.key, "saved_at": time.time(), "task": cs.task,
                "corrected": sorted(int(i) for i in cs.corrected),
                "tags": {str(k): int(v) for k, v in cs.tags.items()}}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        if cs.labels is not None:
            arrays["labels"] = np.asarray(cs.labels)
        path = self.path(cs.key)
        with self._lock, atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return path

    def load(self, key: str) -> SavedCorrections | None:
        """The saved corrections of study ``key``, or None if there are none.

        An unreadable file (empty, truncated, damaged: a CRC error, bad JSON, missing
        fields) raises :class:`AutosaveError` naming it and the problem, after moving it
        aside to ``<name>.corrupt`` (kept for inspection; the next save starts afresh)."""
        path = self.path(key)
        if not path.is_file():
            return None
        saved = read_saved(path)
        if saved.key != key:
            return None
        return saved

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> list[Path]:
        return sorted(self.root.glob("*.npz")) if self.root.is_dir() else []


class AutosaveError(ValueError):
    """An autosave file that cannot be read; the message names the file and the problem."""


def read_saved(path: str | Path) -> SavedCorrections:
    """Read one autosave file; :class:`AutosaveError` if it is unreadable (see
    :meth:`Autosave.load`)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty (0 bytes)")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            labels = np.array(z["labels"]) if "labels" in z.files else None
        saved = SavedCorrections(str(meta["key"]), labels,
                                 [int(i) for i in meta["corrected"]],
                                 {int(k): int(v) for k, v in meta.get("tags", {}).items()},
                                 float(meta["saved_at"]), path)
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, json, numpy: all mean "damaged"
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            where = f"; moved aside to {aside.name}"
        except OSError:
            where = ""
        reason = str(e) or type(e).__name__
        raise AutosaveError(f"the autosaved corrections {path} are unreadable "
                            f"({type(e).__name__}: {reason}){where}") from e
    return saved
