"""Segment table dock: one row per class of a Labels layer, like Slicer's / OHIF's segment list.

Columns: colour swatch, name, show (visibility toggle), lock (per-class lock of
:mod:`napari_vismae._tracking`: a re-segmentation leaves locked classes alone), voxel count,
volume in mL (voxel count x the layer's scale, read as mm; area in cm² for a 2-D layer) and
mean / std / min / max of the source image inside the class (HU for CT). The source image is
the one named by the Labels layer's metadata (``metadata["vismae"]["source_image"]`` or
``metadata["source_image"]``), else the image layer of the same shape. Clicking a row jumps to
the class's largest slice and centres it. *Export CSV…* writes the table atomically.

Statistics are computed in a napari worker thread, 300 ms after the last edit (brush,
fill, erase, undo / redo, or a model's write), and a stale computation is abandoned.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from training.io.label_table import ClassStats, segment_statistics_steps, write_table_csv

from ._tracking import events as tracking_events
from ._tracking import locked_classes, set_locked_classes

if TYPE_CHECKING:
    import napari

COLUMNS = ["", "name", "show", "lock", "voxels", "mL", "mean", "std", "min", "max"]
COL_SWATCH, COL_NAME, COL_SHOW, COL_LOCK, COL_VOXELS, COL_VOLUME = range(6)
DEBOUNCE_MS = 300
TRANSPARENT = np.zeros(4, np.float32)
HIDDEN = "hidden_classes"  # key in layer.metadata["vismae"]: hidden class -> its own RGBA


def _labels_layers(viewer):
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Labels)]


def _image_layers(viewer):
    import napari

    return [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]


def class_names(layer) -> dict[int, str]:
    """Index -> name from the layer's features, else its metadata (``class_names`` /
    ``label_names``)."""
    names: dict[int, str] = {}
    meta = layer.metadata or {}
    for i, n in enumerate(meta.get("class_names") or []):
        names[i] = str(n)
    for k, n in (meta.get("label_names") or {}).items():
        names[int(k)] = str(n)
    feats = getattr(layer, "features", None)
    if feats is not None and "index" in feats and "name" in feats:
        for i, n in zip(feats["index"], feats["name"], strict=False):
            names[int(i)] = str(n)
    return names


def source_image(viewer, labels_layer):
    """The image layer the labels belong to (by metadata name, else by shape), or None."""
    meta = labels_layer.metadata or {}
    sub = meta.get("vismae") if isinstance(meta.get("vismae"), dict) else {}
    images = _image_layers(viewer)
    for key in (sub.get("source_image"), meta.get("source_image"), meta.get("vismae_image")):
        for ly in images:
            if key and ly.name == key:
                return ly
    for ly in images:
        if not ly.rgb and tuple(ly.data.shape) == tuple(labels_layer.data.shape):
            return ly
    return None


def _statistics_work(labels, classes, names, spacing, image):
    """Worker generator: one ClassStats per class; napari may quit between classes."""
    rows = []
    for row in segment_statistics_steps(labels, classes, names, spacing, image):
        rows.append(row)
        yield row
    return rows


class SegmentTableWidget(QWidget):
    """Dock widget: the segment table of the selected Labels layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        # napari hands plugin widgets a PublicOnlyProxy whose every attribute access makes a
        # new wrapper (so `layer is layer` fails) and warns on the undo-stack lengths read below
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.rows: list[ClassStats] = []
        self.worker = None
        self._generation = 0
        self._pending = False
        self._bound = None  # the Labels layer whose events we follow
        self._history_sig = None

        self._layer_box, self._image_box = QComboBox(), QComboBox()
        form = QFormLayout()
        form.addRow("labels", self._layer_box)
        form.addRow("image", self._image_box)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)  # about four rows, even docked under another widget
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setColumnWidth(COL_SWATCH, 18)
        header.setSectionResizeMode(COL_SWATCH, QHeaderView.ResizeMode.Fixed)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export CSV…")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.recompute)

        self.table.cellClicked.connect(lambda row, _col: self.jump_to(row))
        self.export_button.clicked.connect(self._export_clicked)
        self._layer_box.currentIndexChanged.connect(self._on_layer_choice)
        self._image_box.currentIndexChanged.connect(lambda _i: self.schedule())
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_choices)
        layers.events.removed.connect(self._refresh_choices)
        layers.events.renamed.connect(self._refresh_choices)
        layers.selection.events.active.connect(self._on_active)
        tracking_events.changed.connect(self._on_tracking_changed)
        self.destroyed.connect(lambda *_: self._disconnect_all())
        self._refresh_choices()

    # -- layer choice ----------------------------------------------------------------------
    @property
    def layer(self):
        name = self._layer_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def image(self):
        name = self._image_box.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def set_layer(self, layer) -> None:
        self._layer_box.setCurrentText(layer.name)

    def _refresh_choices(self, event=None) -> None:
        current, image = self._layer_box.currentText(), self._image_box.currentText()
        names = [ly.name for ly in _labels_layers(self.viewer)]
        active = self.viewer.layers.selection.active
        images = ["", *(ly.name for ly in _image_layers(self.viewer))]
        for box, items in ((self._layer_box, names), (self._image_box, images)):
            box.blockSignals(True)
            box.clear()
            box.addItems(items)
            box.blockSignals(False)
        if current in names:
            self._layer_box.setCurrentText(current)
        elif active is not None and active.name in names:
            self._layer_box.setCurrentText(active.name)
        if image in [self._image_box.itemText(i) for i in range(self._image_box.count())]:
            self._image_box.setCurrentText(image)
        self._on_layer_choice(keep_image=bool(image) and current in names)

    def _on_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and active.name in [ly.name for ly in _labels_layers(self.viewer)]:
            if active.name != self._layer_box.currentText():
                self._layer_box.setCurrentText(active.name)

    def _on_layer_choice(self, _index=None, keep_image: bool = False) -> None:
        layer = self.layer
        if layer is not self._bound:
            self._unbind()
            if layer is not None:
                layer.events.paint.connect(self.schedule)
                layer.events.data.connect(self.schedule)
                layer.events.set_data.connect(self._on_refresh)
                self._bound = layer
                self._history_sig = self._history(layer)
        if layer is not None and not keep_image:
            src = source_image(self.viewer, layer)
            self._image_box.blockSignals(True)
            self._image_box.setCurrentText(src.name if src is not None else "")
            self._image_box.blockSignals(False)
        self.schedule()

    def _unbind(self) -> None:
        layer, self._bound = self._bound, None
        if layer is not None:
            for ev, cb in ((layer.events.paint, self.schedule), (layer.events.data, self.schedule),
                           (layer.events.set_data, self._on_refresh)):
                ev.disconnect(cb)

    def _disconnect_all(self) -> None:
        self._unbind()
        tracking_events.changed.disconnect(self._on_tracking_changed)

    @staticmethod
    def _history(layer):
        return (len(getattr(layer, "_undo_history", ())), len(getattr(layer, "_redo_history", ())))

    def _on_refresh(self, event=None) -> None:
        # napari announces undo / redo only as a refresh (as it does a slice change): recompute
        # only when the undo / redo stacks moved
        layer = self._bound
        if layer is not None and self._history(layer) != self._history_sig:
            self._history_sig = self._history(layer)
            self.schedule()

    # -- statistics ------------------------------------------------------------------------
    def schedule(self, event=None) -> None:
        """Recompute after DEBOUNCE_MS of quiet."""
        self._timer.start()

    def recompute(self) -> None:
        from napari.qt.threading import create_worker

        layer = self.layer
        if layer is None:
            self.rows = []
            self._fill_table()
            self.status.setText("no Labels layer")
            return
        if self.worker is not None:  # one at a time: stop the stale one, start after it ends
            self._pending = True
            self.worker.quit()
            return
        self._generation += 1
        gen = self._generation
        image = self.image
        img = None
        if (image is not None and not image.rgb and not image.multiscale
                and tuple(image.data.shape) == tuple(layer.data.shape)):
            img = np.asarray(image.data)
        elif image is not None:
            self.status.setText(f"{image.name!r} is not on the grid of {layer.name!r}: "
                                "no intensity statistics")
        names = class_names(layer)
        self.status.setText("computing…")
        worker = create_worker(_statistics_work, np.asarray(layer.data),
                               [i for i in names if i != 0], names, tuple(layer.scale), img,
                               _start_thread=False)
        worker.returned.connect(lambda rows: self._on_rows(rows, gen, layer, img is not None))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()

    def _on_finished(self) -> None:
        self.worker = None
        if self._pending:
            self._pending = False
            self.recompute()

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Segment table: {exc}")

    def _on_rows(self, rows, gen, layer, has_image) -> None:
        if gen != self._generation or layer is not self.layer:
            return
        self.rows = rows
        self._fill_table()
        img = self.image
        units = self.intensity_units()
        what = (f"intensities of {img.name!r}" + (f" in {units}" if units else "")
                if has_image else "no source image")
        self.status.setText(f"{len(rows)} classes; {what}")

    def intensity_units(self) -> str:
        img = self.image
        modality = str(((img.metadata or {}).get("modality") if img is not None else "") or "")
        return "HU" if modality.upper() == "CT" else ""

    # -- the table -------------------------------------------------------------------------
    @staticmethod
    def hidden_classes(layer) -> dict[int, np.ndarray]:
        """Hidden class -> its own colour, kept in ``layer.metadata["vismae"]["hidden_classes"]``
        (so that a save writes the real colour, and another table shows it)."""
        meta = (layer.metadata or {}).get("vismae") or {}
        return {int(k): np.asarray(v, np.float32)
                for k, v in (meta.get(HIDDEN) or {}).items()}

    def class_color(self, layer, index: int) -> np.ndarray:
        """The class's own colour (also while it is hidden)."""
        hidden = self.hidden_classes(layer)
        if index in hidden:
            return hidden[index]
        return np.asarray(layer.get_color(index), np.float32)

    def _fill_table(self) -> None:
        layer = self.layer
        t = self.table
        t.setRowCount(len(self.rows))
        two_d = layer is not None and layer.ndim < 3
        units = self.intensity_units()
        t.setHorizontalHeaderLabels(
            COLUMNS[:COL_VOLUME] + ["cm²" if two_d else "mL"]
            + [f"{c} ({units})" if units else c for c in COLUMNS[COL_VOLUME + 1:]])
        locked = set(locked_classes(layer)) if layer is not None else set()
        hidden = self.hidden_classes(layer) if layer is not None else {}
        for r, row in enumerate(self.rows):
            rgba = self.class_color(layer, row.index)
            swatch = QTableWidgetItem("")
            swatch.setBackground(QColor.fromRgbF(*(float(v) for v in rgba[:3]), 1.0))
            swatch.setToolTip(f"label {row.index}")
            t.setItem(r, COL_SWATCH, swatch)
            t.setItem(r, COL_NAME, QTableWidgetItem(row.name))
            for col, checked, slot in ((COL_SHOW, row.index not in hidden, self.set_visible),
                                       (COL_LOCK, row.index in locked, self.set_locked)):
                box = QCheckBox()
                box.setChecked(checked)
                box.toggled.connect(lambda on, c=row.index, f=slot: f(c, on))
                t.setCellWidget(r, col, box)
            vals = [f"{row.voxels:,}", f"{row.volume_ml:.1f}"] + [
                "" if math.isnan(v) else f"{v:.1f}" for v in (row.mean, row.std, row.min, row.max)]
            for k, v in enumerate(vals):
                item = QTableWidgetItem(v)
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter))
                t.setItem(r, COL_VOXELS + k, item)

    def checkbox(self, index: int, column: int) -> QCheckBox:
        """The show / lock check box of class ``index`` (``column`` COL_SHOW or COL_LOCK)."""
        r = [row.index for row in self.rows].index(index)
        return self.table.cellWidget(r, column)

    def set_visible(self, index: int, visible: bool) -> None:
        """Show or hide class ``index`` of the layer (its colour becomes transparent)."""
        from napari.utils.colormaps import DirectLabelColormap

        layer = self.layer
        if layer is None:
            return
        index = int(index)
        classes = {row.index for row in self.rows} | {index}
        colors = {c: self.class_color(layer, c) for c in classes}  # own colours, before
        hidden = {c: colors.get(c, rgba) for c, rgba in self.hidden_classes(layer).items()}
        if visible:
            hidden.pop(index, None)
        else:
            hidden[index] = colors[index]
        if layer.metadata is None:
            layer.metadata = {}
        meta = layer.metadata.setdefault("vismae", {})
        meta[HIDDEN] = {str(c): [float(v) for v in rgba] for c, rgba in hidden.items()}
        if index in [row.index for row in self.rows]:
            box = self.checkbox(index, COL_SHOW)
            if box.isChecked() != visible:
                box.blockSignals(True)
                box.setChecked(visible)
                box.blockSignals(False)
        old = layer.colormap
        color_dict = dict(old.color_dict) if isinstance(old, DirectLabelColormap) else {}
        color_dict.setdefault(None, np.array([0.5, 0.5, 0.5, 1.0], np.float32))
        color_dict[0] = TRANSPARENT
        for c, rgba in colors.items():
            color_dict[c] = TRANSPARENT if c in hidden else rgba
        layer.colormap = DirectLabelColormap(color_dict=color_dict)

    def set_locked(self, index: int, locked: bool) -> None:
        layer = self.layer
        if layer is None:
            return
        classes = set(locked_classes(layer))
        (classes.add if locked else classes.discard)(int(index))
        set_locked_classes(layer, classes)

    def _on_tracking_changed(self, layer) -> None:
        if layer is not self.layer:
            return
        locked = set(locked_classes(layer))
        for r, row in enumerate(self.rows):
            box = self.table.cellWidget(r, COL_LOCK)
            if box is not None and box.isChecked() != (row.index in locked):
                box.blockSignals(True)
                box.setChecked(row.index in locked)
                box.blockSignals(False)

    # -- navigation and export -------------------------------------------------------------
    def jump_to(self, row: int) -> None:
        """Go to the largest slice of the row's class, centred on it; select it for painting."""
        layer = self.layer
        if layer is None or not 0 <= row < len(self.rows):
            return
        stats = self.rows[row]
        layer.selected_label = stats.index
        if stats.voxels == 0:
            self.status.setText(f"{stats.name} is empty")
            return
        if layer.ndim >= 3 and stats.largest_slice is not None:
            z = stats.largest_slice
            ys, xs = np.nonzero(np.asarray(layer.data[z]) == stats.index)
            world = layer.data_to_world([z, float(ys.mean()), float(xs.mean())]
                                        + [0] * (layer.ndim - 3))
            offset = self.viewer.dims.ndim - layer.ndim
            self.viewer.dims.set_point(offset, float(world[0]))
            centre = world[1:3]
            self.status.setText(f"{stats.name}: slice {z} (the largest, "
                                f"{int(len(ys)):,} voxels)")
        else:
            ys, xs = np.nonzero(np.asarray(layer.data) == stats.index)
            centre = layer.data_to_world([float(ys.mean()), float(xs.mean())])
        if self.viewer.dims.ndisplay == 2:
            camera = getattr(getattr(self.viewer, "scene", None), "camera", None)
            (camera or self.viewer.camera).center = tuple(float(v) for v in centre)

    def export_csv(self, path) -> None:
        """Write the table (as shown) to ``path`` atomically."""
        layer = self.layer
        write_table_csv(path, self.rows, self.intensity_units(),
                        two_d=layer is not None and layer.ndim < 3)
        self.status.setText(f"table written to {path}")

    def _export_clicked(self) -> None:
        from napari.utils.notifications import show_error

        if not self.rows:
            show_error("Segment table: nothing to export (no classes)")
            return
        name = f"{self.layer.name}-segments.csv" if self.layer is not None else "segments.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export segment table", name, "CSV (*.csv)")
        if not path:
            return
        try:
            self.export_csv(path)
        except OSError as e:
            show_error(f"Segment table: cannot write {path}: {e.strerror or e}")
