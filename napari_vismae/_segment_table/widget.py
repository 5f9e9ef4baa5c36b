"""Segment table: the dock widget (layer choice, statistics in a worker thread)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from training.io.label_table import ClassStats

from .._tracking import events as tracking_events
from .helpers import (
    COL_SWATCH,
    COLUMNS,
    DEBOUNCE_MS,
    _image_layers,
    _labels_layers,
    _statistics_work,
    class_names,
    source_image,
)
from .rows import TableRowsMixin

if TYPE_CHECKING:
    import napari


class SegmentTableWidget(TableRowsMixin, QWidget):
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
