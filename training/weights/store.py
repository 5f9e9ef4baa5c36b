"""Where models live: built-in models, the user's model folder, and files opened by hand.

The user folder is ``$NAPARI_VISMAE_MODELS`` if set, else the platform's user
data folder (``~/.local/share/napari-vismae/models`` on Linux). Each model is a
checkpoint directory (``model.safetensors`` + ``model_card.json``). Official
VIS-MAE ``.pth`` files are converted into that format when imported, so they
carry a card from then on. A bad file is reported with the reason and never
listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from training.runtime.atomic import safe_component
from training.weights.card import ModelCard
from training.weights.checkpoint import CARD_NAME, CheckpointError, read_model_card, save_checkpoint

ENV_VAR = "NAPARI_VISMAE_MODELS"


def user_model_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-vismae", appauthor=False)) / "models"


@dataclass
class ModelEntry:
    name: str
    path: Path
    card: ModelCard
    source: str  # "built-in" | "user" | "file"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.card.task}, {self.source})"


@dataclass
class ModelStore:
    """Lists models from the built-in folders, the user folder and opened files."""

    builtin_dirs: list[Path] = field(default_factory=list)
    user_dir: Path = field(default_factory=user_model_dir)
    opened: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: reason" of what was not listed

    def _scan(self, root: Path, source: str) -> list[ModelEntry]:
        entries = []
        if not root.is_dir():
            return entries
        for card_path in sorted(root.rglob(CARD_NAME)):
            d = card_path.parent
            if any(part.startswith(".") for part in d.relative_to(root).parts):
                continue  # temporary directories of an unfinished atomic write
            try:
                card = read_model_card(d)
            except (CheckpointError, OSError) as e:  # one bad card never hides the others
                self.problems.append(str(e))
                continue
            if not (d / "model.safetensors").is_file():
                self.problems.append(f"{d}: model_card.json without model.safetensors")
                continue
            entries.append(ModelEntry(card.name, d, card, source))
        return entries

    def list(self, task: str | None = None) -> list[ModelEntry]:
        self.problems = []
        entries = []
        for root in self.builtin_dirs:
            entries += self._scan(Path(root), "built-in")
        entries += self._scan(self.user_dir, "user")
        for p in self.opened:
            entries += self._scan(p, "file")
        if task is not None:
            entries = [e for e in entries if e.card.task == task]
        seen, unique = set(), []
        for e in entries:
            if e.path.resolve() not in seen:
                seen.add(e.path.resolve())
                unique.append(e)
        return unique

    def open(self, path: str | os.PathLike) -> ModelEntry:
        """Add a model from a file or folder: ours is listed in place; an official ``.pth``
        is converted into the user folder. Raises :class:`CheckpointError` if unusable."""
        from training.weights.checkpoint import _checkpoint_dir, load_any

        path = Path(path)
        d = _checkpoint_dir(path)
        if (d / CARD_NAME).is_file():
            card = read_model_card(d)
            if d not in self.opened:
                self.opened.append(d)
            return ModelEntry(card.name, d, card, "file")
        model, card, report = load_any(path)
        card.provenance["import_report"] = report.to_dict() if report else None
        target = self.user_dir / _slug(path.stem)
        n = 1
        while target.exists():
            n += 1
            target = self.user_dir / f"{_slug(path.stem)}-{n}"
        card.name = target.name
        save_checkpoint(model, target, card)
        return ModelEntry(card.name, target, read_model_card(target), "user")


def _slug(text: str) -> str:
    """A name that becomes a folder: one safe path component (never ``..``, never hidden)."""
    return safe_component(text, fallback="model")
