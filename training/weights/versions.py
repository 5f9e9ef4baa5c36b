"""Immutable model versions with provenance, an active version, rollback and export.

Layout, inside the user model folder::

    <lineage>/v0001/{model.safetensors, model_card.json}
    <lineage>/v0002/...
    <lineage>/active.json          {"active": "v0002"}

A version is written once (atomically) and never modified. Making another
version active (rollback) only rewrites ``active.json`` (atomically), so a
crash or a stopped run can never leave the folder half-updated.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from torch import nn

from training.runtime.atomic import atomic_directory, atomic_write_text, check_writable
from training.weights.card import ModelCard
from training.weights.checkpoint import CARD_NAME, CheckpointError, read_model_card, save_checkpoint
from training.weights.store import ModelEntry, _slug

VERSION_RE = re.compile(r"^v(\d{4,})$")
ACTIVE = "active.json"


class VersionStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.problems: list[str] = []  # "path: reason" of versions that could not be listed

    def check_writable(self) -> Path:
        """Raise :class:`PermissionError` naming the model folder unless a version can be
        written into it: call it *before* a fine-tune, not after."""
        return check_writable(self.root, "model folder")

    def lineage_dir(self, lineage: str) -> Path:
        return self.root / _slug(lineage)

    def versions(self, lineage: str) -> list[ModelEntry]:
        """The healthy versions of ``lineage``, oldest first. A version whose card is corrupt
        is left out (and named in :attr:`problems`); the others stay usable."""
        d = self.lineage_dir(lineage)
        out = []
        if d.is_dir():
            for v in sorted(p for p in d.iterdir() if VERSION_RE.match(p.name)):
                if not (v / CARD_NAME).is_file():
                    continue  # a number reserved by a write in progress (or abandoned)
                try:
                    card = read_model_card(v)
                except CheckpointError as e:
                    if str(e) not in self.problems:
                        self.problems.append(str(e))
                    continue
                out.append(ModelEntry(card.name, v, card, "user"))
        return out

    def lineages(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def active(self, lineage: str) -> ModelEntry | None:
        d = self.lineage_dir(lineage)
        try:
            name = json.loads((d / ACTIVE).read_text())["active"]
        except (OSError, ValueError, KeyError, TypeError):
            versions = self.versions(lineage)
            return versions[-1] if versions else None
        return next((e for e in self.versions(lineage) if e.path.name == name), None)

    def set_active(self, lineage: str, version: str) -> ModelEntry:
        """Make ``version`` (e.g. 'v0002') the active one: a rollback is just this."""
        entry = next((e for e in self.versions(lineage) if e.path.name == version), None)
        if entry is None:
            raise KeyError(f"{lineage} has no version {version!r}")
        atomic_write_text(self.lineage_dir(lineage) / ACTIVE,
                          json.dumps({"active": version}) + "\n")
        return entry

    def add_version(self, model: nn.Module, card: ModelCard, lineage: str,
                    parent: ModelEntry | None = None, make_active: bool = True) -> ModelEntry:
        """Save ``model`` as the next version of ``lineage`` (never overwrites one).

        The number is reserved with an exclusive ``mkdir`` (:func:`atomic_directory`), so
        concurrent writers, in this process or others, each get their own version."""
        d = self.lineage_dir(lineage)
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):  # another writer may reserve the same number: try the next
            numbers = [int(VERSION_RE.match(p.name).group(1)) for p in d.iterdir()
                       if VERSION_RE.match(p.name)]
            version = f"v{max(numbers, default=0) + 1:04d}"
            card.name = f"{_slug(lineage)} {version}"
            if parent is not None:
                card.provenance["parent"] = {"name": parent.card.name, "path": parent.path.name,
                                             "weights_sha256": parent.card.weights_sha256}
            try:
                save_checkpoint(model, d / version, card)
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"{d}: could not allocate a new version folder")
        if make_active:
            self.set_active(lineage, version)
        return ModelEntry(card.name, d / version, read_model_card(d / version), "user")

    @staticmethod
    def export(entry: ModelEntry, destination: str | Path) -> Path:
        """Copy a version's folder to ``destination`` (atomically)."""
        destination = Path(destination)
        with atomic_directory(destination) as tmp:
            for f in entry.path.iterdir():
                shutil.copy2(f, tmp / f.name)
        return destination
