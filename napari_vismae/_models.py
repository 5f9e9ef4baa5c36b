"""The plugin's view of the model store: built-in models shipped in this package,
the user's model folder, and files opened in this session.

The store (and with it torch, which model cards import) is loaded in a worker thread
the first time a widget asks for models: until then the model lists are empty and
the widgets say "loading models…"; when it is ready ``events.models_changed`` fires on
the GUI thread and every widget refreshes its choices. The GUI thread never imports
torch itself.
"""
from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import Signal

if TYPE_CHECKING:
    from training.weights.store import ModelEntry, ModelStore

BUILTIN_DIR = Path(__file__).resolve().parent / "models"
_HEAVY = ("torch", "training.weights.store", "training.interactive.inference")


class _Events:
    """Tells every widget that the list of models changed (a model opened or trained)."""

    models_changed = Signal()


events = _Events()
_store: ModelStore | None = None
_loading: object | None = None  # the background loader, while it runs
_lock = threading.Lock()


def engine_loaded() -> bool:
    """Are torch, the store and the inference engine imported (so using them cannot stall)?"""
    return all(m in sys.modules for m in _HEAVY)


def _import_engine() -> None:
    import torch  # noqa: F401

    import training.interactive.inference  # noqa: F401
    import training.weights.store  # noqa: F401


def load_engine_in_background() -> bool:
    """Import the engine off the GUI thread (once); emit ``models_changed`` when done.

    Returns True if it is already loaded. Without a running Qt application (scripts,
    tests without a viewer) the import simply happens here. The import runs in a plain
    daemon thread and a GUI-thread timer picks up its end, so quitting napari while it
    runs cannot hit a deleted Qt object.
    """
    global _loading
    if engine_loaded():
        return True
    try:
        from qtpy.QtWidgets import QApplication
        app = QApplication.instance()
    except Exception:  # noqa: BLE001 - no Qt at all
        app = None
    if app is None:
        _import_engine()
        return True
    with _lock:
        if _loading is None:
            from qtpy.QtCore import QTimer

            state: dict = {}

            def target():
                try:
                    _import_engine()
                except BaseException as e:  # noqa: BLE001 - reported on the GUI thread
                    state["error"] = e
                state["done"] = True

            thread = threading.Thread(target=target, name="vismae-engine-import", daemon=True)
            timer = QTimer(app)
            timer.setInterval(30)

            def check():
                global _loading
                if not state.get("done"):
                    return
                timer.stop()
                _loading = None
                if "error" in state:
                    from napari.utils.notifications import show_error
                    show_error(f"VIS-MAE: the model engine could not be loaded: {state['error']}")
                else:
                    events.models_changed.emit()

            timer.timeout.connect(check)
            _loading = (thread, timer)
            thread.start()
            timer.start()
    return False


def get_store() -> ModelStore:
    """The session's store (created on first use, so the environment variable is honoured)."""
    global _store
    if _store is None:
        from training.weights.store import ModelStore
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
    widget.native.destroyed.connect(
        lambda *_: events.models_changed.disconnect(callback, missing_ok=True))


def is_active_version(entry: ModelEntry) -> bool:
    """Is ``entry`` the active version of its lineage (:mod:`training.weights.versions`)?"""
    import json

    p = Path(entry.path)
    if not _VERSION_RE.match(p.name) or not (p.parent / "active.json").is_file():
        return False
    try:
        return json.loads((p.parent / "active.json").read_text()).get("active") == p.name
    except (OSError, ValueError):
        return False


_VERSION_RE = re.compile(r"^v(\d{4,})$")  # == training.weights.versions.VERSION_RE


FINETUNED_SUFFIX = "-corrected"  # training.interactive.session.lineage_for: <base>-corrected


def lineage_of(entry: ModelEntry) -> str:
    """The model lineage ``entry``'s predictions belong to (one prediction layer per image
    and lineage): a version folder ``<lineage>/v000N`` belongs to ``<lineage>``, and the
    lineage that fine-tuning grows from a base model (``<base>-corrected``, whose v0001 is
    the base itself) to the base's, so that every fine-tuned version updates the layer the
    user corrected; any other model is its own lineage (its name, slugged as the version
    store slugs it)."""
    p = Path(entry.path)
    if _VERSION_RE.match(p.name):
        name = p.parent.name
    else:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", entry.name).strip("-") or "model"
    if name.endswith(FINETUNED_SUFFIX) and len(name) > len(FINETUNED_SUFFIX):
        name = name[: -len(FINETUNED_SUFFIX)]
    return name


def choice_label(entry: ModelEntry) -> str:
    return entry.label + (" [active]" if is_active_version(entry) else "")


def list_models(task: str | None = None) -> list[ModelEntry]:
    """The store's models for ``task``; [] while the engine is still loading."""
    if not load_engine_in_background():
        return []
    return get_store().list(task=task)


def model_choices(task: str):
    """magicgui choices callback: ``[(label, ModelEntry), ...]`` for ``task``."""
    def choices(_widget=None):
        return [(choice_label(e), e) for e in list_models(task)]
    return choices


def models_loading() -> bool:
    return _loading is not None


__all__ = ["BUILTIN_DIR", "events", "get_store", "set_store", "model_choices", "list_models",
           "follow_model_changes", "is_active_version", "choice_label", "lineage_of",
           "load_engine_in_background", "engine_loaded", "models_loading"]
