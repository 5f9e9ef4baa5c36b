"""The Fine-tune dock widget: the views of this package, wired together."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import Container

from .._models import follow_model_changes
from .autosave import AutosaveView
from .plot import PlotView
from .run import RunView, trainable_choices
from .study import StudyView
from .uncertain import UncertainView
from .versions import VersionsView

if TYPE_CHECKING:
    import napari


class FinetuneWidget(Container):
    """Corrections -> few-shot fine-tuning (in a child process) -> a new model version."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.run_view = RunView(self)  # first: the study's class choices read the model
        self.study = StudyView(self)
        self.autosave_view = AutosaveView(self)
        self.versions_view = VersionsView(self)
        self.uncertain = UncertainView(self)
        # small groups: magicgui lines up labels per container, at a cost quadratic in its size
        groups = [[*self.study.widgets[:2], *self.run_view.widgets],
                  [*self.study.widgets[2:], self.autosave_view.restore_button],
                  self.run_view.run_widgets, [*self.versions_view.widgets,
                                              *self.uncertain.widgets]]
        self.extend([Container(widgets=g, labels=True) for g in groups])
        for g in self:
            g.native.layout().setContentsMargins(0, 0, 0, 0)
        self.plot = PlotView(self)
        self.native.layout().addWidget(self.plot.holder)
        # the attribute names the tests and the walk-through use
        s, r, v = self.study, self.run_view, self.versions_view
        self._image, self._labels, self._mark, self._unmark = s.image, s.labels, s.mark, s.unmark
        self._tag_class, self._tag_slice, self._tag_study = s.tag_class, s.tag_slice, s.tag_study
        self._tags, self._counts = s.tags, s.counts
        self._model, self._mode, self._length, self._unit = r.model, r.mode, r.length, r.unit
        self._lr, self._batch, self._device, self._validation = r.lr, r.batch, r.device, \
            r.validation
        self._run, self._stop, self._progress = r.run_button, r.stop_button, r.progress
        self._status, self._scores = r.status, r.scores
        self._restore = self.autosave_view.restore_button
        self._versions, self._activate, self._export = v.versions, v.activate, v.export
        self._next, self._auto = self.uncertain.next, self.uncertain.auto

        r.model.changed.connect(self._on_model)
        follow_model_changes(self, self._on_models_changed)
        self.native.destroyed.connect(lambda *_: self._shutdown())
        self.reset_choices()
        active = self.viewer.layers.selection.active
        if active is not None and active in [x for x in s.image.choices if x is not None]:
            s.image.value = active
        self._on_model(r.model.value)
        s._on_image(s.image.value)

    # -- shared state ---------------------------------------------------------------------------
    def model_entry(self):
        return self.run_view.model.value if hasattr(self, "run_view") else None

    @property
    def task(self) -> str:
        e = self.model_entry()
        return e.card.task if e is not None else "segmentation"

    @property
    def last_result(self) -> dict | None:
        return self.run_view.result

    def set_status(self, text: str) -> None:
        self.run_view.status.value = text

    def add_status(self, text: str) -> None:
        self.run_view.status.value = f"{self.run_view.status.value}; {text}".lstrip("; ")

    def on_study_changed(self) -> None:
        self.uncertain.forget()
        self.study.update_counts()
        self.autosave_view.check(self.study.image.value)

    # -- model --------------------------------------------------------------------------------
    def _on_model(self, entry) -> None:
        seg = entry is None or entry.card.task == "segmentation"
        self.study.show_task(seg)
        if entry is not None and not seg and self.run_view.mode.value == "decoder":
            self.run_view.mode.value = "head"
        self.uncertain.forget()
        self.versions_view.refresh()
        self.study.update_counts()

    def _on_models_changed(self) -> None:
        current = self.model_entry()
        self.run_view.model.reset_choices()
        if current is not None:  # keep the selection if the model still exists
            self.select_model(current.path)
        self.versions_view.refresh()

    def select_model(self, path) -> None:
        """Select the model stored at ``path`` as the base model."""
        path = Path(path).resolve()
        self.run_view.model.reset_choices()
        for _, e in trainable_choices():
            if e.path.resolve() == path:
                self.run_view.model.value = e
                return

    # -- the public actions (each has a button; tests click the buttons) ------------------------
    def corrected(self, labels_layer=None) -> set[int]:
        return self.study.corrected(labels_layer)

    def correction_sets(self, snapshot: bool = False):
        return self.study.correction_sets(snapshot)

    def version_names(self) -> list[str]:
        return self.versions_view.names()

    def autosave(self):
        return self.autosave_view.autosave()

    def _shutdown(self) -> None:
        self.run_view.shutdown()
        self.autosave_view.shutdown()
        self.study.disconnect()
        self.plot.disconnect()
