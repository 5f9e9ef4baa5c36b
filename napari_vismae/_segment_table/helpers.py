"""Segment table: constants and the layer helpers (names, source image, statistics work)."""
from __future__ import annotations

import numpy as np

from training.io.label_table import segment_statistics_steps

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
