"""The plugin's view of the model store: built-in models shipped in this package,
the user's model folder, and files opened in this session."""
from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from training.weights.store import ModelEntry, ModelStore

BUILTIN_DIR = Path(__file__).resolve().parent / "models"


class _Events:
    """Tells every widget that the list of models changed (a model opened or trained)."""

    models_changed = Signal()


events = _Events()
_store: ModelStore | None = None


def get_store() -> ModelStore:
    """The session's store (created on first use, so the environment variable is honoured)."""
    global _store
    if _store is None:
        _store = ModelStore(builtin_dirs=[BUILTIN_DIR])
    return _store


def set_store(store: ModelStore) -> None:
    """Replace the session's store (tests, or a custom folder)."""
    global _store
    _store = store
    events.models_changed.emit()


def follow_model_changes(widget, callback) -> None:
    """Call ``callback`` when models change, until ``widget``'s Qt object is destroyed."""
    events.models_changed.connect(callback)
    widget.native.destroyed.connect(lambda *_: events.models_changed.disconnect(callback, missing_ok=True))


def is_active_version(entry: ModelEntry) -> bool:
    """Is ``entry`` the active version of its lineage (:mod:`training.weights.versions`)?"""
    import json

    from training.weights.versions import ACTIVE, VERSION_RE

    p = entry.path
    if not VERSION_RE.match(p.name) or not (p.parent / ACTIVE).is_file():
        return False
    try:
        return json.loads((p.parent / ACTIVE).read_text()).get("active") == p.name
    except (OSError, ValueError):
        return False


def choice_label(entry: ModelEntry) -> str:
    return entry.label + (" [active]" if is_active_version(entry) else "")


def model_choices(task: str):
    """magicgui choices callback: ``[(label, ModelEntry), ...]`` for ``task``."""
    def choices(_widget=None):
        return [(choice_label(e), e) for e in get_store().list(task=task)]
    return choices


__all__ = ["BUILTIN_DIR", "ModelEntry", "events", "get_store", "set_store", "model_choices",
           "follow_model_changes", "is_active_version", "choice_label"]
