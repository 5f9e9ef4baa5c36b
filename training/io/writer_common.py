"""What the label writers share: the reference's metadata, label-array checks, default
colours."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.io.errors import ImageWriteError
from training.io.volume import Volume

#: napari-like default colours for label values 1.. (RGB 0-255) used when none are given.
_DEFAULT_COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (128, 255, 0),
]


def _meta(reference: Volume | Mapping | None) -> dict:
    if reference is None:
        return {}
    if isinstance(reference, Volume):
        meta = dict(reference.metadata)
        meta.setdefault("affine", reference.affine)
        return meta
    return dict(reference)


def _label_array(labels, path) -> np.ndarray:
    a = np.asarray(labels)
    if a.dtype.kind not in "biu":
        if a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
            a = a.astype(np.int64)
        else:
            raise ImageWriteError(path, f"labels must be integers, got {a.dtype}")
    if a.size and a.min() < 0:
        raise ImageWriteError(path, "labels must be non-negative")
    return a


def _small_dtype(a: np.ndarray) -> np.ndarray:
    top = int(a.max(initial=0))
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return a.astype(dtype, copy=False)
