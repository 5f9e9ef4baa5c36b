"""Model manager widget: the models available (built-in, user folder, opened files) and
their cards."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from magicgui.widgets import Container, FileEdit, Label, PushButton, Select, TextEdit

from ._models import events, follow_model_changes, get_store, list_models, models_loading
from ._segment_widget import wrap

if TYPE_CHECKING:
    import napari


def describe(entry) -> str:
    """A readable model card."""
    c = entry.card
    prep = c.preprocessing
    lines = [f"{c.name} — {c.task} ({entry.source})", f"folder: {entry.path}"]
    if c.description:
        lines.append(c.description)
    if c.classes:
        lines.append("classes: " + ", ".join(f"{k['index']}={k['name']}" for k in c.classes))
    arch = c.architecture
    lines.append(f"architecture: embed {arch.get('embed_dim')}, depths {arch.get('depths')}, "
                 f"input {prep.get('input_size')} px")
    lines.append(f"preprocessing: modality {prep.get('modality') or 'any'}, CT window "
                 f"{prep.get('ct_window')}, mean {prep.get('mean')}, std {prep.get('std')}")
    prov = {k: v for k, v in c.provenance.items() if k != "versions"}
    lines.append("provenance: " + json.dumps(prov, indent=1, default=str))
    return "\n".join(lines)


class ModelManagerWidget(Container):
    def __init__(self, napari_viewer: napari.viewer.Viewer | None = None):
        super().__init__(labels=False)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.open_worker = None
        self._select = Select(choices=self._choices, label="models")
        self._card = TextEdit(value="")
        self._card.native.setReadOnly(True)
        self._file = FileEdit(mode="r", label="open", filter="*.pth *.pt *.json *.safetensors")
        self._open = PushButton(text="Open model file…")
        self._refresh = PushButton(text="Refresh")
        self._problems = wrap(Label(value=""))
        self.extend([self._select, self._card, self._file, self._open, self._refresh,
                     self._problems])
        self._select.changed.connect(self._show)
        self._open.changed.connect(lambda: self.open_file(self._file.value))
        self._refresh.changed.connect(self.refresh)
        follow_model_changes(self, self.refresh)
        self.refresh()

    def _choices(self, _widget=None):
        return [(e.label, e) for e in list_models()]

    def refresh(self, *_) -> None:
        self._select.reset_choices()
        if models_loading():
            self._problems.value = "loading models…"
            return
        problems = get_store().problems
        self._problems.value = (f"{len(problems)} folder(s) not listed: " + "; ".join(problems[:3])
                                if problems else "")

    def _show(self, selected) -> None:
        self._card.value = "\n\n".join(describe(e) for e in selected or [])

    def open_file(self, path) -> None:
        """Add a model file: read (and, for an official ``.pth``, converted) in a worker
        thread; the result is announced when it is ready."""
        from napari.utils.notifications import show_error

        if not path or str(path) in (".", ""):
            show_error("Choose a model file first (our model folder/card, or an official .pth).")
            return
        if models_loading():
            show_error("The models are still loading; try again in a moment.")
            return
        from napari.qt.threading import create_worker

        def work():
            from training.weights.checkpoint import CheckpointError

            try:
                return get_store().open(path), None
            except (CheckpointError, OSError, ValueError) as e:
                return None, e

        self._open.enabled = False
        self._problems.value = f"opening {path}…"
        self.open_worker = create_worker(work, _progress={"total": 0,
                                                          "desc": "VIS-MAE: opening a model"})
        self.open_worker.returned.connect(lambda out: self._opened(path, *out))
        self.open_worker.errored.connect(lambda e: self._opened(path, None, e))
        self.open_worker.start()

    def _opened(self, path, entry, error) -> None:
        from napari.utils.notifications import show_error, show_info

        self._open.enabled = True
        self._problems.value = ""
        if entry is None:
            show_error(f"Cannot use {path} as a model: {error}")
            return
        show_info(f"Model '{entry.name}' ({entry.card.task}) is ready.")
        events.models_changed.emit()
        self._select.value = [e for e in self._select.choices if e.path == entry.path]
