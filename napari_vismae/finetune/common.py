"""Small helpers shared by the Fine-tune views (Qt only, no napari internals)."""
from __future__ import annotations

import numpy as np
from napari.utils import notifications


def wrap(label):
    """A magicgui Label that wraps long lines instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    label.native.setMinimumWidth(0)
    return label


def narrow(combo, chars: int = 16):
    """A ComboBox whose width does not follow its longest entry."""
    from qtpy.QtWidgets import QComboBox

    combo.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(chars)
    return combo


def layer_shape(layer) -> tuple:
    """The (z, y, x) / (y, x) shape of an image layer's data without reading it (RGB: no
    channel axis)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(np.shape(data))
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def vismae_meta(layer) -> dict:
    meta = (getattr(layer, "metadata", None) or {}).get("vismae")
    return meta if isinstance(meta, dict) else {}


def is_prediction_of(labels_layer, image_layer) -> bool:
    meta = vismae_meta(labels_layer)
    if image_layer is None or meta.get("role") != "prediction":
        return False
    if meta.get("source_id") is not None:  # the Segment widget's layers: survives renames
        return meta["source_id"] == getattr(image_layer, "unique_id", None)
    return meta.get("source_image") == image_layer.name


def notify(kind: str, message: str) -> None:
    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](message)
