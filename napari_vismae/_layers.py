"""Reading what a napari layer holds, and writing predictions back as layers (undoably)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import napari

    from training.weights.card import ModelCard


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


def labels_layer_for(viewer: napari.Viewer, image_layer, card: ModelCard, name: str | None = None):
    """The Labels layer a model writes into: reused if present, else created aligned
    with ``image_layer`` (same scale, translate, affine)."""
    name = name or f"{card.name} labels"
    shape = image_array(image_layer).shape
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer.data.shape == shape:
            return layer
        name = f"{name} ({image_layer.name})"
        if name in viewer.layers:
            return viewer.layers[name]
    meta = {k: v for k, v in (image_layer.metadata or {}).items()}
    meta.update({"model": card.name, "class_names": card.class_names, "source_image": image_layer.name})
    features = {"index": [c["index"] for c in card.classes], "name": [c["name"] for c in card.classes]}
    return viewer.add_labels(np.zeros(shape, np.uint8), name=name, scale=image_layer.scale,
                             translate=image_layer.translate, affine=image_layer.affine,
                             metadata=meta, features=features, colormap=labels_colormap(card),
                             opacity=0.5)


# ids of Labels layers that a model is writing into right now: their ``paint`` events are
# predictions, not the user's corrections (the Fine-tune widget tracks only the latter)
MODEL_WRITES: set[int] = set()


def is_model_write(layer) -> bool:
    return id(layer) in MODEL_WRITES


def write_labels_undoably(layer, new: np.ndarray, slices: list[int] | None = None) -> int:
    """Write ``new`` into ``layer`` as ONE undo step (Ctrl+Z reverts it all).

    ``slices``: only these indices along the first axis change. Returns the
    number of voxels that changed.
    """
    data = layer.data
    if slices is None or data.ndim == 2:
        old_view, new_view, offset = data, new, None
    else:
        s = np.asarray(slices)
        old_view, new_view, offset = data[s], new[s], s
    changed = np.nonzero(np.asarray(old_view) != new_view)
    values = new_view[changed].astype(data.dtype, copy=False)
    if offset is not None:
        changed = (offset[changed[0]],) + changed[1:]
    if changed[0].size:
        MODEL_WRITES.add(id(layer))
        try:
            with layer.block_history():
                layer.data_setitem(changed, values)
        finally:
            MODEL_WRITES.discard(id(layer))
    return int(changed[0].size)
