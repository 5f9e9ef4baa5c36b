"""Which slices of a Labels layer the user corrected, and which classes are locked.

``track(layer)`` follows a napari Labels layer from the moment a model writes it:
every brush stroke, fill, erase or polygon (the layer's public ``paint`` event)
marks the slice(s) it touched as *corrected*, and so does an undo / redo
(Ctrl+Z / Ctrl+Shift+Z) that changes the slice on screen (napari announces those
only as a ``set_data`` refresh, so the displayed slice is compared with a per-slice
CRC fingerprint; what an undo changes off screen, the user has not seen, and it is
not counted). Writes made by a model (:func:`napari_vismae._layers.is_model_write`,
i.e. :func:`~napari_vismae._layers.write_labels_undoably`) are not corrections.

Everything is stored in ``layer.metadata["vismae"]`` so that it travels with the
layer: ``corrected_slices`` (sorted slice indices along the first axis) and
``locked_classes`` (class indices a re-segmentation must not change, like the
per-segment lock of 3D Slicer's editor). Other keys of that dict are left alone.
"""
from __future__ import annotations

import weakref
import zlib

import numpy as np
from psygnal import Signal

from ._layers import is_model_write

__all__ = ["track", "is_tracked", "corrected_slices", "mark_corrected", "locked_classes",
           "set_locked_classes", "events"]

META = "vismae"
CORRECTED = "corrected_slices"
LOCKED = "locked_classes"


class _Events:
    """``events.changed(layer)`` is emitted after a layer's corrected slices or locks change."""

    changed = Signal(object)


events = _Events()


def _meta(layer) -> dict:
    if layer.metadata is None:
        layer.metadata = {}
    meta = layer.metadata.get(META)
    if not isinstance(meta, dict):
        meta = {}
        layer.metadata[META] = meta
    return meta


def _check(layer) -> None:
    import napari

    if not isinstance(layer, napari.layers.Labels):
        raise TypeError(f"{getattr(layer, 'name', layer)!r} is not a napari Labels layer")


def _n_slices(layer) -> int:
    return int(layer.data.shape[0]) if layer.ndim >= 3 else 1


def corrected_slices(layer) -> list[int]:
    """The corrected slices of ``layer``, sorted (empty if none)."""
    meta = (layer.metadata or {}).get(META) or {}
    return sorted({int(i) for i in meta.get(CORRECTED, [])})


def _set_corrected(layer, slices) -> None:
    new = sorted({int(i) for i in slices})
    if new != corrected_slices(layer):
        _meta(layer)[CORRECTED] = new
        events.changed.emit(layer)


def mark_corrected(layer, index: int, corrected: bool = True) -> None:
    """Mark (or unmark) slice ``index`` of ``layer`` as corrected by the user."""
    _check(layer)
    index = int(index)
    if not 0 <= index < _n_slices(layer):
        raise IndexError(f"slice {index} is outside {layer.name!r} "
                         f"({_n_slices(layer)} slice(s))")
    s = set(corrected_slices(layer))
    (s.add if corrected else s.discard)(index)
    _set_corrected(layer, s)


def locked_classes(layer) -> list[int]:
    """Classes of ``layer`` that a re-segmentation must not change, sorted."""
    meta = (layer.metadata or {}).get(META) or {}
    return sorted({int(c) for c in meta.get(LOCKED, [])})


def set_locked_classes(layer, classes) -> None:
    """Lock exactly ``classes`` (class indices; 0 = background is allowed)."""
    _check(layer)
    new = sorted({int(c) for c in classes})
    if new != locked_classes(layer):
        _meta(layer)[LOCKED] = new
        events.changed.emit(layer)


class _Tracker:
    """Follows one layer's public events; holds per-slice fingerprints for undo detection."""

    def __init__(self, layer):
        self.layer = weakref.ref(layer)
        self.prints: dict[int, int] = {}
        self.shape = tuple(layer.data.shape)
        self.stale: set[int] = set()
        self._refresh_pending = False
        self.rebaseline()
        layer.events.paint.connect(self.on_paint)
        layer.events.set_data.connect(self.on_refresh)
        layer.events.data.connect(self.on_data)

    # fingerprints --------------------------------------------------------------------------
    def _print(self, layer, z: int) -> int:
        a = np.ascontiguousarray(layer.data[z] if layer.ndim >= 3 else layer.data)
        return zlib.crc32(a.view(np.uint8).reshape(-1) if a.size else b"")

    def rebaseline(self, slices=None) -> None:
        layer = self.layer()
        if layer is None:
            return
        self.shape = tuple(layer.data.shape)
        todo = range(_n_slices(layer)) if slices is None else slices
        for z in todo:
            self.prints[int(z)] = self._print(layer, int(z))
            self.stale.discard(int(z))
        if slices is None:
            self.prints = {z: p for z, p in self.prints.items() if z < _n_slices(layer)}

    def changed(self, slices) -> set[int]:
        """Which of ``slices`` differ from their fingerprint (updating it)."""
        layer = self.layer()
        out = set()
        for z in slices:
            p = self._print(layer, z)
            if z in self.stale:  # the last write was announced before it happened
                self.stale.discard(z)
            elif self.prints.get(z) != p:
                out.add(z)
            self.prints[z] = p
        return out

    def _later(self) -> None:
        """Refresh stale fingerprints once control returns to the event loop."""
        if self._refresh_pending:
            return
        try:
            from qtpy.QtCore import QTimer
            from qtpy.QtWidgets import QApplication
        except ImportError:  # no Qt: the next event refreshes them
            return
        if QApplication.instance() is None:
            return
        self._refresh_pending = True

        def run():
            self._refresh_pending = False
            if self.layer() is not None and self.stale:
                self.rebaseline(sorted(self.stale))

        QTimer.singleShot(0, run)

    # events --------------------------------------------------------------------------------
    def on_paint(self, event) -> None:
        """A committed stroke / fill / data_setitem; napari emits it before writing pixels."""
        layer = self.layer()
        if layer is None or tuple(layer.data.shape) != self.shape:
            self.rebaseline()
            return
        touched = _touched(event.value, layer)
        if touched is None:  # an edit we cannot read: find it by its fingerprints later
            touched = set(range(_n_slices(layer)))
        self.stale |= touched
        if not is_model_write(layer):
            _set_corrected(layer, set(corrected_slices(layer)) | touched)
        self._later()

    def on_refresh(self, event=None) -> None:
        """Undo / redo show up only as a refresh: compare the slice(s) on screen."""
        layer = self.layer()
        if layer is None:
            return
        if tuple(layer.data.shape) != self.shape:
            self.rebaseline()
            return
        on_screen = _slices_on_screen(layer)
        if self.stale:  # a stroke or model write whose pixels have landed by now
            self.rebaseline(sorted(self.stale - on_screen))
        edited = self.changed(on_screen)
        if edited:  # an undo / redo: what it did off screen, the user has not seen
            self.rebaseline(sorted(set(range(_n_slices(layer))) - on_screen))
            if not is_model_write(layer):
                _set_corrected(layer, set(corrected_slices(layer)) | edited)

    def on_data(self, event=None) -> None:
        """The whole array was replaced: a model's (no mark) or the user's (diff it)."""
        layer = self.layer()
        if layer is None:
            return
        if is_model_write(layer) or tuple(layer.data.shape) != self.shape:
            self.rebaseline()
            return
        edited = self.changed(range(_n_slices(layer)))
        if edited:
            _set_corrected(layer, set(corrected_slices(layer)) | edited)


def _touched(atoms, layer) -> set[int] | None:
    """Slices (first axis) that a ``paint`` event's history atoms touch, or None if unknown.

    napari documents the atoms as either a 3-tuple (indices, old values, new values) or an
    object whose ``slice_key`` is the bounding box of a masked edit."""
    if layer.ndim < 3:
        return {0}
    out: set[int] = set()
    try:
        for atom in atoms or []:
            key = getattr(atom, "slice_key", None)
            if key is not None:
                z = key[0]
                out.update(range(*z.indices(layer.data.shape[0])) if isinstance(z, slice)
                           else [int(z)])
            else:
                z = np.asarray(atom[0][0])  # one slice per atom is common: skip the sort
                lo, hi = (int(z.min()), int(z.max())) if z.size else (0, -1)
                out.update([lo] if lo == hi else (int(i) for i in np.unique(z)))
    except (TypeError, IndexError, ValueError):
        return None
    return out


def _slices_on_screen(layer) -> set[int]:
    """The slice(s) of ``layer`` the current viewer shows (all, in a 3-D view)."""
    if layer.ndim < 3:
        return {0}
    import napari

    viewer = napari.current_viewer()
    if viewer is None or layer not in viewer.layers:
        return set()
    if 0 in viewer.dims.displayed:
        return set(range(_n_slices(layer)))
    z = layer.world_to_data(viewer.dims.point)[0]
    return {int(np.clip(round(float(z)), 0, _n_slices(layer) - 1))}


_TRACKERS: dict[int, _Tracker] = {}


def track(layer) -> None:
    """Follow the user's edits of Labels ``layer`` from now on (idempotent)."""
    _check(layer)
    if id(layer) in _TRACKERS and _TRACKERS[id(layer)].layer() is layer:
        return
    _TRACKERS[id(layer)] = _Tracker(layer)
    _meta(layer).setdefault(CORRECTED, [])
    key = id(layer)
    weakref.finalize(layer, _TRACKERS.pop, key, None)


def is_tracked(layer) -> bool:
    t = _TRACKERS.get(id(layer))
    return t is not None and t.layer() is layer
