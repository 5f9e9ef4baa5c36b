"""Segment widget: run a VIS-MAE segmentation model on an image layer, off the GUI thread.

The prediction lands in a Labels layer aligned with the image, named after the
model, coloured and named by the model card's classes, in one undoable step.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from ._layers import (
    current_slice,
    image_array,
    labels_layer_for,
    modality_and_window,
    write_labels_undoably,
)
from ._models import follow_model_changes, model_choices
from ._worker import ModelCache, start_worker

if TYPE_CHECKING:
    import napari

SCOPES = ("current slice", "all slices", "slice range")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


class SegmentWidget(Container):
    """Image + model + scope -> Labels layer. Run and Cancel; progress in the activity dock."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._model = ComboBox(label="model", choices=model_choices("segmentation"))
        self._scope = ComboBox(label="scope", choices=SCOPES, value="all slices")
        self._first = SpinBox(label="from slice", min=0, max=100_000, visible=False)
        self._last = SpinBox(label="to slice", min=0, max=100_000, visible=False)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._precision = ComboBox(label="precision", choices=PRECISIONS, value="auto")
        self._batch = SpinBox(label="batch size", min=1, max=256, value=8)
        self._uncertainty = CheckBox(text="add uncertainty layer", value=False)
        self._run = PushButton(text="Segment")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self._status = Label(value="")
        self.extend([self._image, self._model, self._scope, self._first, self._last, self._device,
                     self._precision, self._batch, self._uncertainty, self._run, self._cancel,
                     self._progress, self._status])
        self._scope.changed.connect(self._on_scope)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        follow_model_changes(self, self.reset_choices)
        self.native.destroyed.connect(lambda *_: self.cancel())
        self._models = ModelCache()
        self.worker = None
        self.last_result = None
        self.reset_choices()

    # -- UI ---------------------------------------------------------------------------------
    def _on_scope(self, scope: str) -> None:
        self._first.visible = self._last.visible = scope == "slice range"

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._cancel.enabled = running
        self._progress.visible = running

    def _slices(self, layer, n: int) -> list[int] | None:
        scope = self._scope.value
        if layer.ndim < 3:
            return None
        if scope == "current slice":
            return [current_slice(self.viewer, layer)]
        if scope == "slice range":
            lo, hi = sorted((self._first.value, self._last.value))
            if hi >= n:
                raise ValueError(f"slice range {lo}-{hi} is outside 0-{n - 1}")
            return list(range(lo, hi + 1))
        return None

    # -- actions ----------------------------------------------------------------------------
    def run(self) -> None:
        """Start segmentation in a worker thread (returns at once)."""
        from napari.utils.notifications import show_error

        layer, entry = self._image.value, self._model.value
        if layer is None or entry is None:
            show_error("Choose an image layer and a segmentation model first.")
            return
        try:
            data = image_array(layer)
            slices = self._slices(layer, data.shape[0])
        except ValueError as e:
            show_error(str(e))
            return
        modality, window = modality_and_window(layer)
        n = 1 if data.ndim == 2 else len(slices) if slices is not None else data.shape[0]
        batches = -(-n // self._batch.value)
        self._progress.max, self._progress.value = batches, 0
        self._status.value = f"segmenting {n} slice(s) with {entry.name}..."
        kwargs = dict(slices=slices, modality=modality, window=window, batch_size=self._batch.value,
                      precision=self._precision.value, keep_probabilities=self._uncertainty.value)
        self._started = time.perf_counter()
        self.worker = start_worker(
            self._models, entry, "segment", data, kwargs, self._device.value,
            total=batches, desc=f"VIS-MAE segment ({entry.name})",
            on_progress=self._on_progress,
            on_result=lambda result: self._on_result(result, layer, entry, data),
            on_error=self._on_error, on_aborted=self._on_aborted)
        self._set_running(True)

    def cancel(self) -> None:
        if self.worker is not None and self.worker.is_running:
            self._status.value = "cancelling..."
            self.worker.quit()

    # -- worker callbacks (main thread) -------------------------------------------------------
    def _on_progress(self, p) -> None:
        self._progress.value = min(-(-p.done // self._batch.value), self._progress.max)

    def _on_result(self, result, layer, entry, data) -> None:
        self._set_running(False)
        self.last_result = result
        card = entry.card
        labels_layer = labels_layer_for(self.viewer, layer, card)
        changed = write_labels_undoably(labels_layer, result.labels, result.slices
                                        if data.ndim == 3 else None)
        if result.probabilities is not None:
            self._add_uncertainty(layer, result, data, card)
        dt = time.perf_counter() - self._started
        self._status.value = (f"{len(result.slices)} slice(s) in {dt:.1f} s; {changed} voxels "
                              f"changed in '{labels_layer.name}' (Ctrl+Z undoes)")

    def _add_uncertainty(self, layer, result, data, card) -> None:
        p = result.probabilities.astype(np.float32)
        entropy = -(p * np.log(np.clip(p, 1e-8, 1))).sum(1)
        full = np.zeros(data.shape, np.float32)
        if data.ndim == 2:
            full = entropy[0]
        else:
            full[result.slices] = entropy
        name = f"{card.name} uncertainty"
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == full.shape:
            self.viewer.layers[name].data = full
        else:
            self.viewer.add_image(full, name=name, scale=layer.scale, translate=layer.translate,
                                  affine=layer.affine, colormap="inferno", blending="additive",
                                  opacity=0.6, contrast_limits=(0, float(np.log(card.num_classes))))

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._set_running(False)
        self._status.value = f"failed: {exc}"
        show_error(f"Segmentation failed: {exc}")

    def _on_aborted(self) -> None:
        self._set_running(False)
        self._status.value = "cancelled; nothing was written"
