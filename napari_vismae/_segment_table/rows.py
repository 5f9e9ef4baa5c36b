"""Segment table: filling the rows, show / lock toggles, jumping to a class, CSV export
(a mixin of :class:`~napari_vismae._segment_table.widget.SegmentTableWidget`)."""
from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QTableWidgetItem,
)

from training.io.label_table import write_table_csv

from .._tracking import locked_classes, set_locked_classes
from .helpers import (
    COL_LOCK,
    COL_NAME,
    COL_SHOW,
    COL_SWATCH,
    COL_VOLUME,
    COL_VOXELS,
    COLUMNS,
    HIDDEN,
    TRANSPARENT,
)


class TableRowsMixin:
    """The table part of the segment table dock."""

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
