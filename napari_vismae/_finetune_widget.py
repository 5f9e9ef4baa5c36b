"""Fine-tune widget: correct the model's labels, then fine-tune on the corrected slices.

The loop: segment a study (Segment widget), correct the labels by painting,
press Fine-tune. The slices painted on are tracked automatically (the Labels
layer's ``paint`` event, with a data-change fallback) and can be marked
corrected by hand; only they are training data. Training runs the engine's
loop (:mod:`training.interactive.session`) in a napari thread worker: a progress
bar, a live plot of loss and validation Dice, and Stop (keeps the best
weights so far, without making them active). Each finished run is a new
immutable model version in the user's model folder; any version can be made
active again (rollback) or exported. "Next uncertain slice" jumps to the
slice the model is least sure about. Corrections are autosaved (idle time and
before every run) into a work folder beside the model folder and offered back
when the study is opened again.
"""
from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
    create_widget,
)

from training.interactive.autosave import Autosave, work_dir_for
from training.interactive.corrections import (
    CorrectionError,
    CorrectionSet,
    study_key,
    validate_sets,
)
from training.interactive.session import (
    DEFAULT_LR,
    MODES,
    SessionConfig,
    lineage_for,
    session_steps,
)
from training.weights.versions import VersionStore

from ._layers import (
    current_slice,
    image_array,
    is_model_write,
    modality_and_window,
    write_labels_undoably,
)
from ._models import choice_label, events, follow_model_changes, get_store
from ._worker import ModelCache, start_worker

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")
VALIDATION = (("auto (hold-out, leave-one-out if few)", "auto"), ("hold-out 20%", "hold-out"),
              ("leave-one-out", "leave-one-out"), ("none (shows TRAINING Dice)", "none"))
KEY = "vismae_study_key"
CORRECTED = "vismae_corrected"
TAGS = "vismae_tags"
AUTOSAVE_IDLE_MS = 3000


def _trainable_choices(_widget=None):
    return [(choice_label(e), e) for e in get_store().list()
            if e.card.task in ("segmentation", "classification")]


def _drive(entry, sets, cfg, versions, stop_event):
    """The worker's generator: the session's events, then its result."""
    return (yield from session_steps(entry, sets, cfg, versions, stop_event))


def _painted_slices(event_value, ndim: int) -> set[int]:
    """Slice indices (first axis) touched by a Labels ``paint`` event's history atoms."""
    if ndim < 3:
        return {0}
    out: set[int] = set()
    for atom in event_value or []:
        key = getattr(atom, "slice_key", None)
        if key is not None:  # _MaskedPaintAtom: a bounding box
            z = key[0]
            out.update(range(z.start or 0, z.stop) if isinstance(z, slice) else [int(z)])
        else:  # (indices, old, new)
            idx = atom[0][0]
            out.update(int(i) for i in np.unique(np.asarray(idx)))
    return out


class FinetuneWidget(Container):
    """Corrections -> few-shot fine-tuning -> a new model version."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        from qtpy.QtCore import QTimer

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._labels = create_widget(annotation="napari.layers.Labels", label="corrections")
        self._model = ComboBox(label="base model", choices=_trainable_choices)
        self._mode = ComboBox(label="mode", choices=MODES, value="decoder")
        self._length = SpinBox(label="length", min=1, max=1_000_000, value=150)
        self._unit = ComboBox(label="unit", choices=("steps", "epochs"), value="steps")
        self._lr = LineEdit(label="learning rate", value="1e-3")
        self._batch = SpinBox(label="batch size", min=1, max=256, value=4)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto")
        self._validation = ComboBox(label="validation", choices=VALIDATION, value="auto")
        self._mark = PushButton(text="Mark current slice corrected")
        self._unmark = PushButton(text="Unmark current slice")
        self._tag_class = ComboBox(label="class", choices=self._class_choices)
        self._tag_slice = PushButton(text="Tag current slice")
        self._tag_study = PushButton(text="Tag whole study")
        self._tags = Table(value={"data": [], "index": [], "columns": ["slice", "class"]},
                           label="tags")
        self._counts = Label(value="")
        self._restore = PushButton(text="Restore corrections", visible=False)
        self._run = PushButton(text="Fine-tune")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self._status = Label(value="")
        self._versions = ComboBox(label="versions", choices=[])
        self._activate = PushButton(text="Make active (rollback)")
        self._export = PushButton(text="Export...")
        self._next = PushButton(text="Next uncertain slice")
        self._auto = CheckBox(text="re-segment current slice after training", value=True)
        self.extend([self._image, self._labels, self._model, self._mode, self._length, self._unit,
                     self._lr, self._batch, self._device, self._validation, self._mark,
                     self._unmark, self._tag_class, self._tag_slice, self._tag_study, self._tags,
                     self._counts, self._restore, self._run, self._stop, self._progress,
                     self._status, self._versions, self._activate, self._export, self._next,
                     self._auto])
        self._make_plot()
        self.worker = None
        self.aux_worker = None  # ranking / re-segmentation
        self.last_result = None
        self.ranking = None
        self._ranking_key = None
        self._visited: set[int] = set()
        self._stop_event: threading.Event | None = None
        self._writing = False
        self._bound = None  # the Labels layer whose paint events we follow
        self._snapshot = None
        self._pending_restore = None
        self._offered: set[str] = set()
        self._cache = ModelCache()
        self._curves: dict[str, list] = {"step": [], "loss": [], "score_step": [], "score": []}
        self._metric = "val_dice"
        self._autosave_timer = QTimer()
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_IDLE_MS)
        self._autosave_timer.timeout.connect(self.autosave)

        self._model.changed.connect(self._on_model)
        self._mode.changed.connect(self._on_mode)
        self._image.changed.connect(self._on_image)
        self._labels.changed.connect(self._bind_labels)
        self._mark.changed.connect(lambda: self.mark_current(True))
        self._unmark.changed.connect(lambda: self.mark_current(False))
        self._tag_slice.changed.connect(lambda: self.tag_current(study=False))
        self._tag_study.changed.connect(lambda: self.tag_current(study=True))
        self._restore.changed.connect(self.restore)
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self._activate.changed.connect(self.make_active)
        self._export.changed.connect(lambda: self.export_version())
        self._next.changed.connect(self.next_uncertain)
        follow_model_changes(self, self._on_models_changed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.native.destroyed.connect(lambda *_: self._shutdown())
        self.reset_choices()
        self._on_model(self._model.value)
        self._bind_labels(self._labels.value)
        self._on_image(self._image.value)

    # -- helpers ------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        e = self._model.value
        return e.card.task if e is not None else "segmentation"

    def _versions_store(self) -> VersionStore:
        return VersionStore(get_store().user_dir)

    def _autosaver(self) -> Autosave:
        return Autosave(work_dir_for(get_store().user_dir))

    def _key(self, image_layer) -> str:
        meta = image_layer.metadata
        if KEY not in meta:
            meta[KEY] = study_key(image_array(image_layer), meta)
        return meta[KEY]

    def _slice_now(self) -> int:
        layer = self._image.value or self._labels.value
        return current_slice(self.viewer, layer) if layer is not None else 0

    def corrected(self, labels_layer=None) -> set[int]:
        layer = labels_layer or self._labels.value
        return set(layer.metadata.get(CORRECTED, [])) if layer is not None else set()

    def _set_corrected(self, layer, slices) -> None:
        from qtpy.QtCore import QTimer

        layer.metadata[CORRECTED] = sorted(int(i) for i in slices)
        self._update_counts()
        # napari announces a brush stroke before it writes the pixels: count again after it
        QTimer.singleShot(0, self._update_counts_safely)

    def _update_counts_safely(self) -> None:
        try:
            self._update_counts()
        except RuntimeError:  # the widget was closed meanwhile
            pass

    def tags(self, image_layer=None) -> dict[int, int]:
        layer = image_layer or self._image.value
        return {int(k): int(v) for k, v in layer.metadata.get(TAGS, {}).items()} if layer else {}

    def correction_sets(self) -> list[CorrectionSet]:
        """The training set: the chosen (image, labels) pair, plus other pairs in the viewer
        whose labels layer has corrected slices and names its image (``vismae_image``)."""
        img, lab = self._image.value, self._labels.value
        if img is None:
            return []
        modality, window = modality_and_window(img)
        if self.task == "classification":
            out = []
            for layer in self.viewer.layers:
                if layer._type_string == "image" and self.tags(layer):
                    m, w = modality_and_window(layer)
                    out.append(CorrectionSet(image_array(layer), None, tags=self.tags(layer),
                                             key=self._key(layer), task="classification",
                                             modality=m, window=w))
            return out
        if lab is None:
            return []
        data = image_array(img)
        if np.shape(lab.data) != data.shape:
            raise CorrectionError(f"labels layer {lab.name!r} has shape {np.shape(lab.data)}, "
                                  f"the image {data.shape}")
        sets = [CorrectionSet(data, np.asarray(lab.data), self.corrected(lab), key=self._key(img),
                              modality=modality, window=window)]
        for other in self.viewer.layers:
            src = other.metadata.get("vismae_image") if other._type_string == "labels" else None
            if other is lab or not src or src not in self.viewer.layers or \
                    not self.corrected(other) or src == img.name:
                continue
            oimg = self.viewer.layers[src]
            if np.shape(other.data) == image_array(oimg).shape:
                m, w = modality_and_window(oimg)
                sets.append(CorrectionSet(image_array(oimg), np.asarray(other.data),
                                          self.corrected(other), key=self._key(oimg),
                                          modality=m, window=w))
        return sets

    # -- model / mode ---------------------------------------------------------------------------
    def _on_model(self, entry) -> None:
        seg = entry is None or entry.card.task == "segmentation"
        for w in (self._labels, self._mark, self._unmark):
            w.visible = seg
        for w in (self._tag_class, self._tag_slice, self._tag_study, self._tags):
            w.visible = not seg
        if entry is not None:
            self._tag_class.reset_choices()
            if not seg and self._mode.value == "decoder":
                self._mode.value = "head"
        self._ranking_key = None
        self._refresh_versions()
        self._update_counts()

    def _class_choices(self, _widget=None):
        entry = self._model.value if hasattr(self, "_model") else None
        if entry is None:
            return []
        return [(c["name"], c["index"]) for c in sorted(entry.card.classes,
                                                        key=lambda c: c["index"])]

    def _on_mode(self, mode: str) -> None:
        self._lr.value = f"{DEFAULT_LR[mode]:g}"

    def _on_models_changed(self) -> None:
        current = self._model.value
        self.reset_choices()
        if current is not None:  # keep the selection if the model still exists
            same = [e for _, e in _trainable_choices() if e.path == current.path]
            if same:
                self._model.value = same[0]
        self._refresh_versions()

    def select_model(self, path) -> None:
        """Select the model stored at ``path`` as the base model."""
        self.reset_choices()
        for _, e in _trainable_choices():
            if e.path.resolve() == path.resolve():
                self._model.value = e
                return

    # -- tracking corrections ----------------------------------------------------------------
    def _bind_labels(self, layer) -> None:
        if self._bound is not None:
            self._bound.events.paint.disconnect(self._on_paint)
            self._bound.events.data.disconnect(self._on_data)
        self._bound = layer
        self._snapshot = None
        if layer is not None:
            layer.events.paint.connect(self._on_paint)
            layer.events.data.connect(self._on_data)
            self._snapshot = np.array(layer.data, copy=True)
            img = self._image.value
            if img is not None and np.shape(layer.data) == image_array(img).shape:
                layer.metadata.setdefault("vismae_image", img.name)
        self._update_counts()

    def _on_paint(self, event) -> None:
        layer = self._bound
        if self._writing or layer is None or is_model_write(layer):
            if layer is not None and self._snapshot is not None:
                self._snapshot = np.array(layer.data, copy=True)  # a prediction: new baseline
            return
        touched = _painted_slices(event.value, layer.ndim)
        self._set_corrected(layer, self.corrected(layer) | touched)
        if self._snapshot is not None and self._snapshot.shape == layer.data.shape:
            for z in touched:
                if layer.ndim >= 3:
                    self._snapshot[z] = layer.data[z]
        self._autosave_timer.start()

    def _on_data(self, event=None) -> None:
        """Fallback for edits that replace the data (no paint event): diff with a snapshot."""
        layer = self._bound
        if self._writing or layer is None:
            return
        new = np.asarray(layer.data)
        old, self._snapshot = self._snapshot, np.array(new, copy=True)
        if old is None or old.shape != new.shape:
            return
        if new.ndim >= 3:
            changed = {int(z) for z in np.nonzero((old != new).reshape(new.shape[0], -1)
                                                   .any(1))[0]}
        else:
            changed = {0} if (old != new).any() else set()
        if changed:
            self._set_corrected(layer, self.corrected(layer) | changed)
            self._autosave_timer.start()

    def _write(self, layer, new, slices) -> int:
        """Write model output into ``layer`` (undoably) without counting it as a correction."""
        self._writing = True
        try:
            n = write_labels_undoably(layer, new, slices)
        finally:
            self._writing = False
        if self._snapshot is not None and self._snapshot.shape == layer.data.shape:
            self._snapshot = np.array(layer.data, copy=True)
        return n

    def mark_current(self, corrected: bool = True) -> None:
        layer = self._labels.value
        if layer is None:
            return
        z = self._slice_now()
        s = self.corrected(layer)
        (s.add if corrected else s.discard)(z)
        self._set_corrected(layer, s)
        self._status.value = f"slice {z} {'marked' if corrected else 'no longer'} corrected"
        self._autosave_timer.start()

    def tag_current(self, study: bool = False) -> None:
        img = self._image.value
        if img is None or self._tag_class.value is None:
            return
        n = 1 if img.ndim < 3 else image_array(img).shape[0]
        tags = self.tags(img)
        for z in (range(n) if study else [self._slice_now()]):
            tags[z] = int(self._tag_class.value)
        img.metadata[TAGS] = tags
        self._update_counts()
        self._autosave_timer.start()

    def _update_counts(self) -> None:
        entry = self._model.value
        names = entry.card.class_names if entry is not None else []
        try:
            sets = self.correction_sets()
        except (CorrectionError, ValueError):
            sets = []
        n = sum(len(s.training_slices()) for s in sets)
        counts: dict[int, int] = {}
        for s in sets:
            for c, k in s.class_counts().items():
                counts[c] = counts.get(c, 0) + k
        per = ", ".join(f"{names[c] if c < len(names) else c}: {k}"
                        for c, k in sorted(counts.items()) if k)
        what = "tagged" if self.task == "classification" else "corrected"
        self._counts.value = f"{n} {what} slice(s)" + (f" - {per}" if per else "")
        if self.task == "classification" and self._image.value is not None:
            rows = [[z, names[c] if c < len(names) else c] for z, c in sorted(self.tags().items())]
            self._tags.value = {"data": rows, "index": [""] * len(rows),
                                "columns": ["slice", "class"]}

    # -- autosave / restore ---------------------------------------------------------------------
    def autosave(self) -> None:
        """Save the current study's corrections atomically (called when idle, and before a run)."""
        try:
            sets = self.correction_sets()
        except (CorrectionError, ValueError):
            return
        if sets and (sets[0].training_slices() or sets[0].tags):
            self._autosaver().save(sets[0])

    def _on_layer_inserted(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and layer._type_string == "image" and self._image.value is None:
            self.reset_choices()
        self._on_image(self._image.value)

    def _on_image(self, layer) -> None:
        """Offer to restore autosaved corrections of this study."""
        self._restore.visible = False
        self._pending_restore = None
        self._ranking_key = None
        if layer is None:
            return
        try:
            saved = self._autosaver().load(self._key(layer))
        except ValueError:
            return
        if saved is None:
            return
        lab = self._labels.value
        already = lab is not None and np.shape(lab.data) == np.shape(layer.data) and \
            self.corrected(lab) >= set(saved.corrected) and self.tags(layer).items() >= \
            saved.tags.items()
        if already or not (saved.corrected or saved.tags):
            return
        self._pending_restore = saved
        when = _dt.datetime.fromtimestamp(saved.saved_at).strftime("%Y-%m-%d %H:%M")
        n = len(saved.corrected) or len(saved.tags)
        self._restore.text = f"Restore {n} corrected slice(s) saved {when}"
        self._restore.visible = True
        if saved.key in self._offered:
            return
        self._offered.add(saved.key)
        from napari.utils.notifications import show_info
        show_info(f"VIS-MAE: {n} autosaved corrected slice(s) exist for {layer.name!r}; "
                  "use 'Restore' in the Fine-tune widget")

    def restore(self) -> None:
        """Put the autosaved labels and corrected slices back (one undo step)."""
        saved, img = self._pending_restore, self._image.value
        if saved is None or img is None:
            return
        if saved.tags:
            img.metadata[TAGS] = {**self.tags(img), **saved.tags}
        if saved.labels is not None:
            lab = self._labels.value
            if lab is None or np.shape(lab.data) != saved.labels.shape:
                lab = self.viewer.add_labels(np.zeros(saved.labels.shape, np.uint8),
                                             name=f"{img.name} corrections", scale=img.scale,
                                             translate=img.translate, affine=img.affine,
                                             opacity=0.5)
                self.reset_choices()
                self._labels.value = lab
            lab.metadata[KEY] = saved.key
            lab.metadata["vismae_image"] = img.name
            self._write(lab, saved.labels.astype(lab.data.dtype, copy=False), None)
            self._set_corrected(lab, self.corrected(lab) | set(saved.corrected))
        self._restore.visible = False
        self._pending_restore = None
        self._update_counts()
        self._status.value = (f"restored {len(saved.corrected) or len(saved.tags)} corrected "
                              "slice(s)")

    # -- fine-tuning ----------------------------------------------------------------------------
    def session_config(self) -> SessionConfig:
        from training.interactive.inference import pick_device

        device = str(pick_device(self._device.value))  # RuntimeError if not available
        try:
            lr = float(self._lr.value)
        except ValueError:
            raise ValueError(f"learning rate {self._lr.value!r} is not a number") from None
        epochs = self._length.value if self._unit.value == "epochs" else None
        return SessionConfig(mode=self._mode.value, steps=self._length.value, epochs=epochs,
                             val_every=max(1, min(10, self._length.value // 5 or 1))
                             if epochs is None else 10,
                             batch_size=self._batch.value, lr=lr, device=device,
                             validation=self._validation.value)

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._stop.enabled = running
        self._progress.visible = running
        self._activate.enabled = self._export.enabled = not running

    def run(self) -> None:
        """Check the training set, autosave, then train in a worker thread (returns at once)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        entry = self._model.value
        if entry is None:
            show_error("Choose a base model first.")
            return
        try:
            sets = self.correction_sets()
            validate_sets(sets, entry.card.num_classes)
            cfg = self.session_config()
        except (CorrectionError, ValueError, RuntimeError) as e:
            self._status.value = f"cannot fine-tune: {e}"
            show_error(f"Cannot fine-tune: {e}")
            return
        self.autosave()
        self._stop_event = threading.Event()
        self._curves = {"step": [], "loss": [], "score_step": [], "score": []}
        self._progress.max, self._progress.value = 1, 0
        self._status.value = f"fine-tuning {entry.name} ({cfg.mode})..."
        self._started = time.perf_counter()
        self.last_result = None
        self.worker = create_worker(_drive, entry, sets, cfg, self._versions_store(),
                                    self._stop_event,
                                    _progress={"total": 0,
                                               "desc": f"VIS-MAE fine-tune ({entry.name})"})
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.start()
        self._set_running(True)

    def stop(self) -> None:
        """Stop after the current step; the best weights so far are kept (not made active)."""
        if self._stop_event is not None and self.worker is not None and self.worker.is_running:
            self._stop_event.set()
            self._status.value = "stopping after the current step..."

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("kind")
        if kind == "start":
            self._progress.max = max(1, ev["total_steps"])
            self._metric = ev["metric"]
            self._status.value = (f"training on {ev['n_train']} slice(s), validation: "
                                  f"{ev['validation']} ({ev['n_val']} slice(s))")
        elif kind == "baseline":
            self._curves["score_step"].append(0)
            self._curves["score"].append(ev["score"])
            self._draw()
        elif kind == "step":
            self._progress.value = min(ev["step"], self._progress.max)
            self._curves["step"].append(ev["step"])
            self._curves["loss"].append(ev["loss"])
            if ev["step"] % 5 == 0:
                self._draw()
        elif kind == "epoch":
            if ev.get("score") is not None:
                self._curves["score_step"].append(ev["step"])
                self._curves["score"].append(ev["score"])
            self._draw()
        elif kind == "oom":
            self._status.value = ev["message"]
        elif kind == "saving":
            self._status.value = "saving the new version..."

    def _on_done(self, result) -> None:
        self._set_running(False)
        self.last_result = result
        self._status.value = result.message + f" ({result.duration_s:.0f} s)"
        self._draw()
        if result.entry is None:
            return
        events.models_changed.emit()
        if result.status == "done":
            self.select_model(result.entry.path)
            if self._auto.value and self.task == "segmentation":
                self.resegment_current(result.entry)
        self._refresh_versions()

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._set_running(False)
        self._status.value = f"fine-tuning failed: {exc}; the active version is unchanged"
        show_error(f"Fine-tuning failed: {exc}")

    # -- live plot ----------------------------------------------------------------------------
    def _make_plot(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._canvas = FigureCanvasQTAgg(Figure(figsize=(4, 2.4), tight_layout=True))
        self._canvas.setMinimumHeight(180)
        self.native.layout().addWidget(self._canvas)
        self._ax_loss = self._canvas.figure.add_subplot(111)
        self._ax_score = self._ax_loss.twinx()

    def _draw(self) -> None:
        c = self._curves
        ax, ax2 = self._ax_loss, self._ax_score
        ax.clear()
        ax2.clear()
        if c["step"]:
            ax.plot(c["step"], c["loss"], color="#0072B2", lw=1, label="loss")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss", color="#0072B2")
        label = {"val_dice": "validation Dice", "train_dice": "TRAINING Dice (no hold-out)",
                 "val_accuracy": "validation accuracy",
                 "train_accuracy": "TRAINING accuracy (no hold-out)"}.get(self._metric,
                                                                          self._metric)
        if c["score"]:
            ax2.plot(c["score_step"], c["score"], "o-", color="#D55E00", ms=3, label=label)
        ax2.set_ylabel(label, color="#D55E00")
        ax2.yaxis.set_label_position("right")
        ax2.set_ylim(0, 1)
        self._canvas.draw_idle()

    # -- versions -----------------------------------------------------------------------------
    def _lineage(self) -> str | None:
        entry = self._model.value
        return lineage_for(entry, self._versions_store()) if entry is not None else None

    def _refresh_versions(self) -> None:
        lineage = self._lineage()
        vs = self._versions_store()
        versions = vs.versions(lineage) if lineage else []
        active = vs.active(lineage) if lineage else None
        choices = []
        for v in versions:
            prov = v.card.provenance
            m = prov.get("metrics", {})
            best = m.get("best")
            tag = f" {m.get('selection')} {best:.3f}" if isinstance(best, float) else " (base)"
            mark = "  [active]" if active is not None and v.path == active.path else ""
            status = " stopped" if prov.get("status") == "stopped" else ""
            choices.append((f"{v.path.name}{tag}{status}{mark}", v))
        self._versions.choices = choices
        if active is not None:
            self._versions.value = next(v for _, v in choices if v.path == active.path)

    def version_names(self) -> list[str]:
        return [v.path.name for v in self._versions.choices]

    def make_active(self, version=None) -> None:
        """Make the selected (or named) version active: a rollback is just this."""
        entry = self._versions.value if version is None else next(
            v for v in self._versions.choices if v.path.name == version)
        if entry is None:
            return
        lineage = entry.path.parent.name
        self._versions_store().set_active(lineage, entry.path.name)
        events.models_changed.emit()
        self.select_model(entry.path)
        self._refresh_versions()
        self._status.value = f"{entry.card.name} is now active"

    def export_version(self, destination=None):
        """Copy the selected version to ``destination`` (asks for a folder name if None)."""
        from pathlib import Path

        entry = self._versions.value
        if entry is None:
            return None
        if destination is None:
            from qtpy.QtWidgets import QFileDialog
            destination, _ = QFileDialog.getSaveFileName(self.native, "Export model version",
                                                         entry.card.name.replace(" ", "-"))
            if not destination:
                return None
        out = VersionStore.export(entry, Path(destination))
        self._status.value = f"exported {entry.card.name} to {out}"
        return out

    # -- active learning ------------------------------------------------------------------------
    def _ranking_model(self):
        entry = self._model.value
        vs = self._versions_store()
        lineage = self._lineage()
        active = vs.active(lineage) if lineage else None
        return active or entry

    def next_uncertain(self) -> None:
        """Jump to the most uncertain slice not yet corrected or visited (ranks in a worker
        the first time, and again after the model changes)."""
        from napari.utils.notifications import show_error

        img, entry = self._image.value, self._ranking_model()
        if img is None or entry is None or entry.card.task != "segmentation":
            show_error("Choose an image and a segmentation model to rank slices.")
            return
        key = (str(entry.path), self._key(img))
        if self.ranking is not None and self._ranking_key == key:
            self._jump()
            return
        data = image_array(img)
        modality, window = modality_and_window(img)
        self._status.value = f"ranking slices by the uncertainty of {entry.name}..."

        def work():
            from training.interactive.active_learning import rank_steps
            from training.interactive.inference import pick_device
            dev = pick_device(self._device.value)
            model, card = self._cache.get(entry, dev)
            return (yield from rank_steps(model, card, data, modality=modality, window=window,
                                          device=dev))

        from napari.qt.threading import create_worker
        self.aux_worker = create_worker(work, _progress={"total": 0, "desc": "VIS-MAE ranking"})

        def done(ranking):
            self.ranking, self._ranking_key, self._visited = ranking, key, set()
            self._jump()

        self.aux_worker.returned.connect(done)
        self.aux_worker.errored.connect(lambda e: show_error(f"Ranking failed: {e}"))
        self.aux_worker.start()

    def _jump(self) -> None:
        img, lab = self._image.value, self._labels.value
        z = self.ranking.next_after(self._visited, self.corrected(lab) if lab else ())
        if z is None:
            self._status.value = "every slice has been visited or corrected"
            return
        self._visited.add(z)
        rank = self.ranking.slices.index(z)
        if img.ndim >= 3:
            world = img.data_to_world([z] + [0] * (img.ndim - 1))
            self.viewer.dims.set_point(0, float(world[0]))
        if lab is not None and lab.ndim >= 3 and not np.asarray(lab.data[z]).any():
            pred = self.ranking.result.labels
            if pred.ndim >= 3:
                self._write(lab, pred.astype(lab.data.dtype, copy=False), [z])
        self._status.value = (f"slice {z}: uncertainty {self.ranking.scores[rank]:.3f} "
                              f"(rank {rank + 1} of {len(self.ranking.slices)})")

    def resegment_current(self, entry) -> None:
        """Segment the current slice with ``entry``; written only if it is not corrected."""
        img, lab = self._image.value, self._labels.value
        if img is None or lab is None:
            return
        data = image_array(img)
        z = self._slice_now()
        if z in self.corrected(lab):
            self._status.value += f"; slice {z} is corrected, not re-segmented"
            return
        modality, window = modality_and_window(img)
        kwargs = dict(slices=[z] if data.ndim == 3 else None, modality=modality, window=window,
                      batch_size=1)

        def on_result(result):
            if z in self.corrected(lab):
                return
            self._write(lab, result.labels.astype(lab.data.dtype, copy=False),
                        [z] if data.ndim == 3 else None)
            self._status.value += f"; slice {z} re-segmented with {entry.card.name}"

        self.aux_worker = start_worker(
            self._cache, entry, "segment", data, kwargs, self._device.value, total=1,
            desc="VIS-MAE re-segment", on_progress=lambda p: None, on_result=on_result,
            on_error=lambda e: None, on_aborted=lambda: None)

    def _shutdown(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        try:
            self._autosave_timer.stop()
        except RuntimeError:  # already deleted with the widget
            pass
        try:
            self.viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
        except (RuntimeError, TypeError, ValueError):
            pass
