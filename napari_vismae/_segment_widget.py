"""Segment widget: run a VIS-MAE segmentation model on an image layer, off the GUI thread.

The prediction lands in the image's prediction layer for the model's lineage
(:mod:`napari_vismae._layers`): created with its data the first time (undo = delete the
layer), updated in one undoable step afterwards, never on a slice the user corrected or a
voxel of a locked class. Torch, the model and every full-volume array operation stay in
the worker thread; the GUI thread only adds the layer or applies the precomputed diff.
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
    Select,
    SpinBox,
    create_widget,
)

from training.interactive import CPU_BATCH

from ._domain import DomainGuard, fit_height
from ._layers import (
    apply_prediction_diff,
    current_slice,
    find_prediction_layer,
    image_array,
    modality_and_window,
    new_prediction_layer,
    prediction_diff,
    protections,
    set_prediction_model,
    unwrap,
)
from ._models import follow_model_changes, lineage_of, model_choices, models_loading
from ._worker import MODELS, start_worker

if TYPE_CHECKING:
    import napari

SCOPES = ("current slice", "all slices", "slice range")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
# batch size on CPU, chosen by measurement (``python -m benchmarks.bench_models
# --cpu-batch``, docs/performance.md: batch 4 takes the fewest CPU-seconds per slice with
# the built-in and the paper-size model, batch 8 no fewer and twice the memory); the
# engine's default too. GPUs take bigger batches.
DEFAULT_BATCH = CPU_BATCH


def wrap(label: Label) -> Label:
    """Let a status label wrap instead of widening its dock."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setMinimumWidth(50)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    label.changed.connect(lambda *_: fit_height(label))
    return label


class SegmentWidget(Container):
    """Image + model + scope -> prediction layer. Run and Cancel; progress in the activity dock."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = unwrap(napari_viewer)
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._model = ComboBox(label="model", choices=model_choices("segmentation"))
        self._scope = ComboBox(label="scope", choices=SCOPES, value="all slices")
        self._first = SpinBox(label="from slice", min=0, max=100_000, visible=False)
        self._last = SpinBox(label="to slice", min=0, max=100_000, visible=False)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._precision = ComboBox(label="precision", choices=PRECISIONS, value="auto")
        self._batch = SpinBox(label="batch size", min=1, max=256, value=DEFAULT_BATCH)
        self._locked = Select(label="keep classes", choices=self._class_choices,
                              tooltip="Locked classes: a re-segmentation never changes their "
                                      "voxels (corrected slices are never changed either)")
        self._locked.native.setMaximumHeight(90)
        self._uncertainty = CheckBox(text="add uncertainty layer", value=False)
        self._run = PushButton(text="Segment")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self._status = wrap(Label(value=""))
        self._guard = DomainGuard()
        self.extend([self._image, self._model, self._scope, self._first, self._last, self._device,
                     self._precision, self._batch, self._locked, self._uncertainty,
                     *self._guard.widgets, self._run, self._cancel, self._progress,
                     self._status])
        self._scope.changed.connect(self._on_scope)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        self._image.changed.connect(self._sync_locked)
        self._image.changed.connect(self._check_domain)
        self._model.changed.connect(self._on_model)
        self._locked.changed.connect(self._on_locked)
        follow_model_changes(self, self._on_models_changed)
        self.native.destroyed.connect(lambda *_: self.cancel())
        from . import _tracking  # locks set elsewhere (the segment table) show here too

        _tracking.events.changed.connect(self._on_tracking)
        self.native.destroyed.connect(
            lambda *_: _tracking.events.changed.disconnect(self._on_tracking, missing_ok=True))
        self._models = MODELS
        self.worker = None
        self._busy = False
        self.last_result = None
        self.last_layer = None
        self._syncing = False
        self.reset_choices()
        self._on_models_changed()

    # -- UI ---------------------------------------------------------------------------------
    def _on_models_changed(self, *_):
        self.reset_choices()
        if models_loading() and self._model.value is None:
            self._status.value = "loading models…"
        elif self._status.value == "loading models…":
            self._status.value = ""

    def _on_scope(self, scope: str) -> None:
        self._first.visible = self._last.visible = scope == "slice range"

    def _set_running(self, running: bool) -> None:
        self._busy = running
        self._run.enabled = not running
        self._cancel.enabled = running
        self._progress.visible = running

    def _class_choices(self, _widget=None):
        entry = self._model.value if hasattr(self, "_model") else None
        if entry is None:
            return []
        return [(c["name"], int(c["index"])) for c in entry.card.classes if int(c["index"]) > 0]

    def target_layer(self):
        """The prediction layer the current image + model would update (None: a new one)."""
        layer, entry = unwrap(self._image.value), self._model.value
        if layer is None or entry is None:
            return None
        return find_prediction_layer(self.viewer, layer, lineage_of(entry))

    def _on_model(self, *_):
        self._locked.reset_choices()
        self._sync_locked()
        self._check_domain()

    def _check_domain(self, *_):
        self._guard.update(unwrap(self._image.value), self._model.value)

    def _sync_locked(self, *_):
        """Show the target layer's locked classes."""
        from . import _tracking

        target = self.target_layer()
        wanted = [] if target is None else _tracking.locked_classes(target)
        valid = [c for c in wanted if c in self._locked.choices]
        if list(self._locked.value) != valid:
            self._syncing = True
            try:
                self._locked.value = valid
            finally:
                self._syncing = False

    def _on_tracking(self, layer=None):
        if layer is not None and layer is self.target_layer():
            self._sync_locked()

    def _on_locked(self, value):
        from . import _tracking

        if self._syncing:
            return
        target = self.target_layer()
        if target is not None:
            _tracking.set_locked_classes(target, list(value))

    def reset_choices(self, *_):
        super().reset_choices()
        if hasattr(self, "_syncing"):
            self._sync_locked()
            self._check_domain()

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

        if self._busy:  # (not ``worker.is_running``: the last worker's thread may still be
            return      # winding down after its result was delivered; a click then is new)
        layer, entry = unwrap(self._image.value), self._model.value
        if layer is None or entry is None:
            show_error("The models are still loading; try again in a moment." if models_loading()
                       else "Choose an image layer and a segmentation model first.")
            return
        self._check_domain()
        if self._guard.blocks():
            self._status.value = ("not run: the image is outside the model's domain (see the "
                                  "warning above); tick 'apply anyway' to run it regardless")
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
        lineage = lineage_of(entry)
        target = find_prediction_layer(self.viewer, layer, lineage)
        want_entropy = self._uncertainty.value
        kwargs = dict(slices=slices, modality=modality, window=window, batch_size=self._batch.value,
                      precision=self._precision.value, keep_probabilities=want_entropy)
        if target is not None:
            corrected, locked = protections(target)
            current = target.data
        else:
            corrected, locked, current = set(), [], None

        def post(result):  # in the worker thread: everything that touches whole volumes
            diff = (prediction_diff(current, result.labels, result.slices if data.ndim == 3
                                    else None, corrected, locked)
                    if current is not None else None)
            entropy = _entropy_volume(result, data.shape) if want_entropy else None
            result.probabilities = None  # (n, classes, y, x): no longer needed
            _warm_layer_imports()
            return result, diff, entropy

        self._started = time.perf_counter()
        self.worker = start_worker(
            self._models, entry, "segment", data, kwargs, self._device.value,
            total=batches, desc=f"VIS-MAE segment ({entry.name})",
            on_progress=self._on_progress,
            on_result=lambda out: self._on_result(out, layer, entry, lineage, target),
            on_error=self._on_error, on_aborted=self._on_aborted, post=post,
            activity=batches > 1)  # one batch: nothing to follow in the activity dock
        self._set_running(True)

    def cancel(self) -> None:
        if self.worker is not None and self.worker.is_running:
            self._status.value = "cancelling..."
            self.worker.quit()

    # -- worker callbacks (main thread) -------------------------------------------------------
    def _on_progress(self, p) -> None:
        if self._run.enabled:  # a late progress signal after the result
            return
        self._progress.value = min(-(-p.done // self._batch.value), self._progress.max)

    def _on_result(self, out, layer, entry, lineage, target) -> None:
        result, diff, entropy = out
        card = entry.card
        if target is not None and target not in self.viewer.layers:
            target, diff = None, None  # the user deleted it meanwhile: start a new one
        if target is None:
            target = find_prediction_layer(self.viewer, layer, lineage)
            if target is not None:  # another run created it meanwhile
                from ._layers import protections as prot
                corrected, locked = prot(target)
                diff = prediction_diff(target.data, result.labels, result.slices
                                       if result.labels.ndim == 3 else None, corrected, locked)
        if target is None:
            target = new_prediction_layer(self.viewer, layer, card, lineage, result.labels)
            self._finish(result, entropy, layer, target, card, None)
        else:
            self._status.value = f"writing the prediction into '{target.name}'..."
            apply_prediction_diff(target, *diff, on_done=lambda n: self._finish(
                result, entropy, layer, target, card, n))

    def _finish(self, result, entropy, layer, target, card, changed) -> None:
        """The prediction is in ``target`` (``changed`` voxels; None: a new layer)."""
        self._set_running(False)
        set_prediction_model(target, card)
        if entropy is not None:
            self._add_uncertainty(layer, entropy, card)
        self.last_layer = target
        self.last_result = result
        dt = time.perf_counter() - self._started
        protected = ""
        corrected, locked = protections(target)
        if corrected or locked:
            lock = f" and locked class(es) {', '.join(map(str, locked))}" if locked else ""
            protected = f"; kept {len(corrected)} corrected slice(s){lock}"
        what = ("new layer" if changed is None else f"{changed} voxels changed in")
        undo = "delete the layer to undo" if changed is None else "Ctrl+Z undoes"
        from training.interactive.ood import summary

        self._status.value = (f"{len(result.slices)} slice(s) in {dt:.1f} s with {card.name}; "
                              f"{what} '{target.name}' ({undo}){protected}. "
                              f"{summary(result.ood)}")
        self._sync_locked()

    def _add_uncertainty(self, layer, full, card) -> None:
        name = f"{card.name} uncertainty"
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == full.shape:
            self.viewer.layers[name].data = full
        else:
            kwargs = {a: getattr(layer, a) for a in ("units", "axis_labels")
                      if getattr(layer, a, None) is not None}
            self.viewer.add_image(full, name=name, scale=layer.scale, translate=layer.translate,
                                  affine=layer.affine, colormap="inferno", blending="additive",
                                  opacity=0.6, contrast_limits=(0, float(np.log(card.num_classes))),
                                  **kwargs)

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._set_running(False)
        self._status.value = f"failed: {exc}"
        show_error(f"Segmentation failed: {exc}")

    def _on_aborted(self) -> None:
        self._set_running(False)
        self._status.value = "cancelled; nothing was written"


def _entropy_volume(result, shape) -> np.ndarray:
    """Per-voxel entropy (nats) of the kept probabilities, as a volume like the image."""
    p = result.probabilities.astype(np.float32)
    entropy = -(p * np.log(np.clip(p, 1e-8, 1))).sum(1)
    if len(shape) == 2:
        return entropy[0]
    full = np.zeros(shape, np.float32)
    full[result.slices] = entropy
    return full


def _warm_layer_imports() -> None:
    """Import what napari's first Labels layer imports (pandas for its features table),
    here in the worker, so adding the layer does not stall the GUI thread."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
