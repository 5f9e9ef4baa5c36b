"""The study being corrected: image, corrections layer, corrected slices, tags."""
from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton, Table

from training.interactive.corrections import CorrectionError, CorrectionSet, study_key

from .. import _tracking
from .._layers import current_slice, image_array, modality_and_window
from .common import is_prediction_of, layer_shape, narrow, notify, vismae_meta, wrap

KEY = "vismae_study_key"
TAGS = "vismae_tags"


def key_of(image_layer) -> str:
    """The study key of an image layer (SeriesInstanceUID or content hash), cached."""
    meta = image_layer.metadata
    if KEY not in meta:
        meta[KEY] = study_key(image_array(image_layer), meta)
    return meta[KEY]


def tags_of(image_layer) -> dict[int, int]:
    if image_layer is None:
        return {}
    return {int(k): int(v) for k, v in image_layer.metadata.get(TAGS, {}).items()}


class StudyView:
    """Pickers for the image and its corrections layer; Mark / Unmark; class tags; counts."""

    def __init__(self, w):
        import napari

        self.w, self.viewer = w, w.viewer
        self._Image, self._Labels = napari.layers.Image, napari.layers.Labels
        self.image = narrow(ComboBox(label="image", choices=self._image_choices))
        self.labels = narrow(ComboBox(label="corrections", choices=self._labels_choices,
                                      nullable=True))
        self.mark = PushButton(text="Mark current slice corrected")
        self.unmark = PushButton(text="Unmark current slice")
        self.tag_class = narrow(ComboBox(label="class", choices=self._class_choices))
        self.tag_slice = PushButton(text="Tag current slice")
        self.tag_study = PushButton(text="Tag whole study")
        self.tags = Table(value={"data": [], "index": [], "columns": ["slice", "class"]},
                          label="tags")
        self.counts = wrap(Label(value=""))
        self.image.changed.connect(self._on_image)
        self.labels.changed.connect(self._on_labels)
        self.mark.changed.connect(lambda *_: self.mark_current(True))
        self.unmark.changed.connect(lambda *_: self.mark_current(False))
        self.tag_slice.changed.connect(lambda *_: self.tag_current(study=False))
        self.tag_study.changed.connect(lambda *_: self.tag_current(study=True))
        _tracking.events.changed.connect(self._on_tracking)
        self.viewer.layers.events.inserted.connect(self._on_inserted)

    @property
    def widgets(self) -> list:
        return [self.image, self.labels, self.mark, self.unmark, self.tag_class,
                self.tag_slice, self.tag_study, self.tags, self.counts]

    def disconnect(self) -> None:
        _tracking.events.changed.disconnect(self._on_tracking)
        try:
            self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        except (RuntimeError, TypeError, ValueError):
            pass

    # -- choices (callables: they survive napari's reset_choices) ---------------------------
    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, self._Image)]

    def _labels_choices(self, _widget=None):
        """Labels layers of the image's shape: its predictions first (latest first)."""
        img = self.image.value if hasattr(self, "image") else None
        if img is None:
            return []
        shape = layer_shape(img)
        labs = [layer for layer in self.viewer.layers
                if isinstance(layer, self._Labels) and tuple(np.shape(layer.data)) == shape]
        preds = [layer for layer in reversed(labs) if is_prediction_of(layer, img)]
        return [(layer.name, layer) for layer in preds + [x for x in labs if x not in preds]]

    def _class_choices(self, _widget=None):
        entry = self.w.model_entry()
        if entry is None:
            return []
        return [(c["name"], c["index"]) for c in sorted(entry.card.classes,
                                                        key=lambda c: c["index"])]

    def default_labels(self):
        """The latest prediction layer of the selected image, or None (never another
        Labels layer - a ground truth, say - unless the user picks it)."""
        img = self.image.value
        return next((layer for _, layer in self._labels_choices()
                     if is_prediction_of(layer, img)), None)

    # -- events ---------------------------------------------------------------------------------
    def _on_image(self, layer) -> None:
        self.labels.reset_choices()
        self.labels.value = self.default_labels()
        self.w.on_study_changed()

    def _on_labels(self, layer) -> None:
        if layer is not None:
            _tracking.track(layer)
        self.update_counts()

    def _on_inserted(self, event=None) -> None:
        """A new prediction of the selected image becomes the corrections layer, unless the
        user is already correcting a prediction of it."""
        layer = getattr(event, "value", None)
        if layer is None or not isinstance(layer, self._Labels):
            return
        img, cur = self.image.value, self.labels.value
        if is_prediction_of(layer, img) and not is_prediction_of(cur, img):
            self.labels.reset_choices()
            self.labels.value = layer

    def _on_tracking(self, layer) -> None:
        if layer is self.labels.value:
            from qtpy.QtCore import QTimer

            # napari announces a stroke before its pixels land: count after it
            QTimer.singleShot(0, self._update_counts_safely)
            self.w.autosave_view.touch()

    def _update_counts_safely(self) -> None:
        try:
            self.update_counts()
        except RuntimeError:  # the widget was closed meanwhile
            pass

    # -- corrected slices and tags ------------------------------------------------------------
    def corrected(self, labels_layer=None) -> set[int]:
        layer = labels_layer or self.labels.value
        return set(_tracking.corrected_slices(layer)) if layer is not None else set()

    def slice_now(self) -> int:
        layer = self.image.value or self.labels.value
        return current_slice(self.viewer, layer) if layer is not None else 0

    def mark_current(self, corrected: bool = True) -> None:
        layer = self.labels.value
        if layer is None:
            notify("info", "VIS-MAE: choose the corrections layer (a Labels layer) first")
            return
        z = self.slice_now()
        _tracking.mark_corrected(layer, z, corrected)
        self.w.set_status(f"slice {z} {'marked' if corrected else 'no longer'} corrected")

    def tag_current(self, study: bool = False) -> None:
        img = self.image.value
        if img is None or self.tag_class.value is None:
            return
        n = layer_shape(img)[0] if len(layer_shape(img)) == 3 else 1
        tags = tags_of(img)
        for z in (range(n) if study else [self.slice_now()]):
            tags[z] = int(self.tag_class.value)
        img.metadata[TAGS] = tags
        self.update_counts()
        self.w.autosave_view.touch()

    def pairs(self) -> list[tuple]:
        """(image layer, labels layer or None) of the training set: the chosen pair, plus other
        images' prediction layers with corrected slices (classification: tagged images)."""
        img, lab = self.image.value, self.labels.value
        if img is None:
            return []
        if self.w.task == "classification":
            return [(layer, None) for layer in self.viewer.layers
                    if isinstance(layer, self._Image) and tags_of(layer)]
        if lab is None:
            return []
        if tuple(np.shape(lab.data)) != layer_shape(img):
            raise CorrectionError(f"labels layer {lab.name!r} has shape {np.shape(lab.data)}, "
                                  f"the image {layer_shape(img)}")
        out = [(img, lab)]
        for other in self.viewer.layers:
            src = vismae_meta(other).get("source_image")
            if other is lab or not isinstance(other, self._Labels) or src == img.name or \
                    src not in self.viewer.layers or not self.corrected(other):
                continue
            oimg = self.viewer.layers[src]
            if isinstance(oimg, self._Image) and np.shape(other.data) == layer_shape(oimg):
                out.append((oimg, other))
        return out

    def correction_sets(self, snapshot: bool = False) -> list[CorrectionSet]:
        """The training set as CorrectionSets. ``snapshot``: copies of the labels (for a
        thread)."""
        copy = np.array if snapshot else np.asarray
        out = []
        for img, lab in self.pairs():
            modality, window = modality_and_window(img)
            if lab is None:
                out.append(CorrectionSet(image_array(img), None, tags=tags_of(img),
                                         key=key_of(img), task="classification",
                                         modality=modality, window=window))
            else:
                out.append(CorrectionSet(image_array(img), copy(lab.data), self.corrected(lab),
                                         key=key_of(img), modality=modality, window=window))
        return out

    def update_counts(self) -> None:
        """'N corrected slice(s) - class: slices holding it, ...' (no study keys needed)."""
        entry = self.w.model_entry()
        names = entry.card.class_names if entry is not None else []
        try:
            pairs = self.pairs()
        except (CorrectionError, ValueError):
            pairs = []
        n, counts = 0, {}
        for img, lab in pairs:
            if lab is None:
                found = list(tags_of(img).values())
                n += len(found)
            else:
                found = []
                for z in sorted(self.corrected(lab)):
                    found += np.unique(np.asarray(lab.data[z] if lab.ndim >= 3 else lab.data)
                                       ).tolist()
                    n += 1
            for c in found:
                counts[int(c)] = counts.get(int(c), 0) + 1
        per = ", ".join(f"{names[c] if c < len(names) else c}: {k}"
                        for c, k in sorted(counts.items()) if k)
        what = "tagged" if self.w.task == "classification" else "corrected"
        self.counts.value = f"{n} {what} slice(s)" + (f" - {per}" if per else "")
        if self.w.task == "classification" and self.image.value is not None:
            rows = [[z, names[c] if c < len(names) else c]
                    for z, c in sorted(tags_of(self.image.value).items())]
            self.tags.value = {"data": rows, "index": [""] * len(rows),
                               "columns": ["slice", "class"]}

    def show_task(self, segmentation: bool) -> None:
        for x in (self.labels, self.mark, self.unmark):
            x.visible = segmentation
        for x in (self.tag_class, self.tag_slice, self.tag_study, self.tags):
            x.visible = not segmentation
        self.tag_class.reset_choices()
