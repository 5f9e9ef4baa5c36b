"""Reading what a napari layer holds, and writing predictions back as layers.

Prediction layers are keyed by (source image, model lineage): each carries
``layer.metadata["vismae"] = {"role": "prediction", "source_image": <image layer name>,
"source_id": <image layer unique id>, "lineage": ..., "model": ..., "class_names": [...]}``.
Re-segmenting an image with any version of the same lineage updates that one layer;
another image (even of the same shape) gets its own.

Writing:

* a NEW prediction layer is created with its data (undo = remove the layer; no per-voxel
  undo history for a whole volume);
* an EXISTING one is updated through napari's undoable path (one Ctrl+Z step), never on
  a slice the user corrected and never on a voxel of a locked class
  (:mod:`napari_vismae._tracking`). The diff is computed off the GUI thread
  (:func:`prediction_diff`) and re-checked against the protections at write time
  (:func:`apply_prediction_diff`).
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import napari

    from training.weights.card import ModelCard

ROLE = "prediction"


def unwrap(obj):
    """The object behind napari's ``PublicOnlyProxy`` (what plugin widgets receive): layer
    identity (``is``, ``id``) must be the real layer's, the one napari's events carry."""
    return getattr(obj, "__wrapped__", obj)


def image_array(layer) -> np.ndarray:
    """The layer's data as a (y, x) or (z, y, x) numpy array (RGB -> gray)."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    data = np.asarray(data)
    if getattr(layer, "rgb", False):
        data = data[..., :3].mean(-1)
    if data.ndim not in (2, 3):
        raise ValueError(f"layer {layer.name!r} has {data.ndim} dimensions; VIS-MAE models take "
                         "a 2-D image or a 3-D volume (z, y, x)")
    return data


def spatial_shape(layer) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def modality_and_window(layer) -> tuple[str | None, tuple[float, float] | None]:
    meta = getattr(layer, "metadata", {}) or {}
    window = meta.get("window")
    return meta.get("modality"), tuple(window) if window is not None else None


def current_slice(viewer: napari.Viewer, layer) -> int:
    """Index along the first axis of a 3-D ``layer`` at the viewer's current position."""
    if layer.ndim < 3:
        return 0
    coords = layer.world_to_data(viewer.dims.point)
    return int(np.clip(round(float(coords[0])), 0, layer.data.shape[0] - 1))


def labels_colormap(card: ModelCard):
    from napari.utils.colormaps import DirectLabelColormap

    colors = {c["index"]: c["color"] for c in card.classes}
    colors[0] = "transparent"
    colors[None] = "transparent"
    return DirectLabelColormap(color_dict=colors)


# -- prediction layers ----------------------------------------------------------------------
def prediction_info(layer) -> dict | None:
    """``layer.metadata["vismae"]`` if ``layer`` is a prediction layer, else None."""
    if layer.__class__.__name__ != "Labels":
        return None
    info = (layer.metadata or {}).get("vismae")
    return info if isinstance(info, dict) and info.get("role") == ROLE else None


def _same_source(info: dict, image_layer) -> bool:
    sid = info.get("source_id")
    if sid is not None:
        return sid == image_layer.unique_id
    return info.get("source_image") == image_layer.name


def prediction_layers(viewer: napari.Viewer, image_layer) -> list:
    """Prediction layers of ``image_layer`` (any lineage), most recently added last."""
    image_layer = unwrap(image_layer)
    shape = spatial_shape(image_layer)
    return [ly for ly in viewer.layers
            if (info := prediction_info(ly)) is not None and _same_source(info, image_layer)
            and tuple(ly.data.shape) == shape]


def find_prediction_layer(viewer: napari.Viewer, image_layer, lineage: str):
    """The prediction layer of ``image_layer`` for model ``lineage``, or None."""
    for ly in reversed(prediction_layers(viewer, image_layer)):
        if prediction_info(ly).get("lineage") == lineage:
            return ly
    return None


def _follow_renames(viewer: napari.Viewer, image_layer) -> None:
    """Keep ``source_image`` equal to the image layer's name when the user renames it."""
    if getattr(image_layer, "_vismae_follows_renames", False):
        return
    vref = weakref.ref(viewer)

    def renamed(event=None):
        v = vref()
        if v is None:
            return
        for ly in v.layers:
            info = prediction_info(ly)
            if info is not None and info.get("source_id") == image_layer.unique_id:
                info["source_image"] = image_layer.name
                ly.metadata["source_image"] = image_layer.name

    image_layer.events.name.connect(renamed, position="first")  # before docks refresh
    image_layer._vismae_follows_renames = True


def _free_name(viewer, name: str) -> str:
    if name not in viewer.layers:
        return name
    n = 2
    while f"{name} [{n}]" in viewer.layers:
        n += 1
    return f"{name} [{n}]"


def aligned_with(image_layer) -> dict:
    """``add_labels``/``add_image`` keyword arguments that put a layer on ``image_layer``'s
    grid: scale, translate, affine and the same units and axis labels (so that napari
    never warns about inconsistent units across layers)."""
    image_layer = unwrap(image_layer)
    kwargs = {"scale": image_layer.scale, "translate": image_layer.translate,
              "affine": image_layer.affine}
    for attr in ("units", "axis_labels"):
        value = getattr(image_layer, attr, None)
        if value is not None:
            kwargs[attr] = value
    return kwargs


def new_prediction_layer(viewer: napari.Viewer, image_layer, card: ModelCard, lineage: str,
                         data: np.ndarray):
    """Add a prediction Labels layer holding ``data`` (no undo history: undo = remove it),
    aligned with ``image_layer`` (scale, translate, affine, units, axis labels), coloured and
    named by the model's classes, and tracked for corrections from this moment on."""
    from . import _tracking

    viewer, image_layer = unwrap(viewer), unwrap(image_layer)
    name = f"{lineage} labels"
    if name in viewer.layers:
        name = _free_name(viewer, f"{lineage} labels ({image_layer.name})")
    meta = {k: v for k, v in (image_layer.metadata or {}).items() if k != "vismae"}
    meta.update({"model": card.name, "class_names": card.class_names,
                 "source_image": image_layer.name,
                 "vismae": {"role": ROLE, "source_image": image_layer.name,
                            "source_id": image_layer.unique_id, "lineage": lineage,
                            "model": card.name, "class_names": list(card.class_names)}})
    features = {"index": [c["index"] for c in card.classes],
                "name": [c["name"] for c in card.classes]}
    data = np.asarray(data)
    if data.dtype != np.uint8 and data.size and int(data.max()) < 256:
        data = data.astype(np.uint8)
    layer = viewer.add_labels(data, name=name, metadata=meta, features=features,
                              colormap=labels_colormap(card), opacity=0.5,
                              **aligned_with(image_layer))
    _tracking.track(layer)
    _follow_renames(viewer, image_layer)
    return layer


def set_prediction_model(layer, card: ModelCard) -> None:
    """Record that ``layer`` now holds ``card``'s prediction (a new version of its lineage)."""
    info = prediction_info(layer)
    if info is not None:
        info["model"] = card.name
        info["class_names"] = list(card.class_names)
    layer.metadata["model"] = card.name


def protections(layer) -> tuple[set[int], list[int]]:
    """(corrected slice indices, locked class values) of a prediction layer."""
    from . import _tracking

    return ({int(i) for i in _tracking.corrected_slices(layer)},
            [int(c) for c in _tracking.locked_classes(layer)])


def prediction_diff(current: np.ndarray, new: np.ndarray, slices: Sequence[int] | None,
                    corrected: Iterable[int] = (), locked: Iterable[int] = ()
                    ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The voxels where ``new`` would change ``current``: ``(indices, values)``.

    Only ``slices`` (all when None) that are not ``corrected``; never a voxel whose current
    or new value is a ``locked`` class. Pure numpy, safe to run in a worker thread.
    """
    current = np.asarray(current)
    locked = np.asarray(sorted({int(c) for c in locked}), dtype=np.int64)
    corrected = {int(i) for i in corrected}
    if current.ndim == 2:
        new = np.asarray(new)
        if 0 in corrected:
            return (np.zeros(0, np.intp),) * 2, np.zeros(0, current.dtype)
        mask = current != new
        if locked.size:
            mask &= ~np.isin(current, locked) & ~np.isin(new, locked)
        idx = np.nonzero(mask)
        return idx, new[idx].astype(current.dtype, copy=False)
    zs = range(current.shape[0]) if slices is None else slices
    # the undo record keeps these indices: 2 bytes per axis instead of 8 where they fit
    itype = np.int16 if max(current.shape) <= np.iinfo(np.int16).max else np.int32
    parts = [[], [], []]
    values = []
    for z in zs:
        z = int(z)
        if z in corrected:
            continue
        cur, nw = current[z], np.asarray(new[[z]])[0]  # new[[z]]: volume-like stand-ins too
        mask = cur != nw
        if locked.size:
            mask &= ~np.isin(cur, locked) & ~np.isin(nw, locked)
        y, x = np.nonzero(mask)
        if y.size:
            parts[0].append(np.full(y.size, z, itype))
            parts[1].append(y.astype(itype))
            parts[2].append(x.astype(itype))
            values.append(nw[y, x])
    if not values:
        return tuple(np.zeros(0, np.intp) for _ in range(3)), np.zeros(0, current.dtype)
    return (tuple(np.concatenate(p) for p in parts),
            np.concatenate(values).astype(current.dtype, copy=False))


def _filter_protected(layer, indices, values):
    corrected, locked = protections(layer)
    if indices[0].size and corrected and layer.data.ndim == 3:
        keep = ~np.isin(indices[0], np.fromiter(corrected, np.intp))
        indices, values = tuple(i[keep] for i in indices), values[keep]
    elif indices[0].size and 0 in corrected and layer.data.ndim == 2:
        return tuple(i[:0] for i in indices), values[:0]
    if indices[0].size and locked:
        keep = ~np.isin(np.asarray(layer.data[indices]), locked) & ~np.isin(values, locked)
        indices, values = tuple(i[keep] for i in indices), values[keep]
    return indices, values


# a diff this large is written over several event-loop turns (still one undo step)
CHUNK_VOXELS = 1_000_000


def apply_prediction_diff(layer, indices: tuple[np.ndarray, ...], values: np.ndarray,
                          on_done=None) -> int:
    """Write a :func:`prediction_diff` into ``layer`` as ONE undo step, re-checking the
    protections as they are now (the user may have painted while the model ran).

    Up to :data:`CHUNK_VOXELS` changed voxels are written at once. A larger diff is
    written slice by slice over several event-loop turns (the GUI stays responsive; the
    layer stays in pan/zoom mode meanwhile) and ``on_done(n)`` is called at the end. Returns the
    number of voxels written (or to be written).
    """
    n = int(indices[0].size)
    if n > CHUNK_VOXELS and layer.data.ndim == 3 and _have_qt_app():
        _ChunkedWrite(layer, indices, values, on_done).start()  # filters chunk by chunk
        return n
    indices, values = _filter_protected(layer, indices, values)
    n = int(indices[0].size)
    if not n:
        if on_done is not None:
            on_done(0)
        return 0
    _write_now(layer, indices, values)
    if on_done is not None:
        on_done(n)
    return n


def _have_qt_app() -> bool:
    try:
        from qtpy.QtWidgets import QApplication
    except ImportError:
        return False
    return QApplication.instance() is not None


class _ChunkedWrite:
    """One undoable write spread over event-loop turns of ~40 ms each."""

    BUDGET_S = 0.04
    ACTIVE: set = set()  # keeps running writes alive

    def __init__(self, layer, indices, values, on_done):
        self.layer, self.indices, self.values, self.on_done = layer, indices, values, on_done
        z = indices[0]  # ordered by slice: one chunk per slice, found by bisection
        # (the probe values in z's own dtype: a mixed-dtype search copies all of z)
        starts = np.searchsorted(z, np.arange(int(z[0]), int(z[-1]) + 1, dtype=z.dtype))
        edges = np.append(starts, z.size)
        self.bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)
                       if b > a]
        self.pos = 0
        self.written = 0

    def start(self):
        from qtpy.QtCore import QTimer

        # no brush stroke may interleave with this write: the layer stays in pan/zoom mode
        # meanwhile (``editable = False`` would wipe napari's undo history)
        self.mode = str(self.layer.mode)
        self.layer.mode = "pan_zoom"
        self.layer.events.mode.connect(self._keep_pan_zoom)
        self._history = self.layer.block_history()
        self._history.__enter__()
        MODEL_WRITES.add(id(self.layer))
        _ChunkedWrite.ACTIVE.add(self)
        QTimer.singleShot(0, self.step)

    def _keep_pan_zoom(self, event=None):
        if str(self.layer.mode) != "pan_zoom":
            self.layer.mode = "pan_zoom"

    def step(self):
        import time

        from qtpy.QtCore import QTimer

        t0 = time.perf_counter()
        try:
            while self.pos < len(self.bounds) and time.perf_counter() - t0 < self.BUDGET_S:
                a, b = self.bounds[self.pos]
                self.pos += 1
                idx, vals = _filter_protected(self.layer, tuple(i[a:b] for i in self.indices),
                                              self.values[a:b])
                if idx[0].size:
                    self.layer.data_setitem(idx, vals, refresh=False)
                    self.written += int(idx[0].size)
        except Exception:
            self.finish()
            raise
        if self.pos < len(self.bounds):
            QTimer.singleShot(0, self.step)
        else:
            self.finish()

    def finish(self):
        try:
            self._history.__exit__(None, None, None)  # commits ONE undo item
        finally:
            MODEL_WRITES.discard(id(self.layer))
            self.layer.events.mode.disconnect(self._keep_pan_zoom)
            self.layer.mode = self.mode
            _ChunkedWrite.ACTIVE.discard(self)
        self.layer.refresh()
        if self.on_done is not None:
            self.on_done(self.written)


# ids of Labels layers that a model is writing into right now: their ``paint`` events are
# predictions, not the user's corrections (the correction tracker ignores them)
MODEL_WRITES: set[int] = set()


def is_model_write(layer) -> bool:
    return id(layer) in MODEL_WRITES


def write_labels_undoably(layer, new, slices: list[int] | None = None,
                          protect: bool = False) -> int:
    """Write ``new`` into ``layer`` as ONE undo step (Ctrl+Z reverts it all). Returns the
    number of voxels changed.

    ``slices``: only these indices along the first axis change (``new`` is then read only
    as ``new[[z]]``). ``protect``: also keep the layer's corrected slices and locked
    classes (what a re-segmentation must do; a restore of the user's own corrections
    must not).
    """
    corrected, locked = protections(layer) if protect else (set(), [])
    indices, values = prediction_diff(layer.data, new, slices, corrected, locked)
    if not protect:
        return _write_now(layer, indices, values)
    return apply_prediction_diff(layer, indices, values)


def _write_now(layer, indices, values) -> int:
    if not indices[0].size:
        return 0
    MODEL_WRITES.add(id(layer))
    try:
        with layer.block_history():
            layer.data_setitem(indices, values)
    finally:
        MODEL_WRITES.discard(id(layer))
    return int(indices[0].size)
