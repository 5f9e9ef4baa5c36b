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

``helpers`` (constants, layer helpers), ``widget`` (the dock: layer choice, statistics) and
``rows`` (the table, toggles, navigation, CSV export).
"""
from .helpers import (
    COL_LOCK,
    COL_NAME,
    COL_SHOW,
    COL_SWATCH,
    COL_VOLUME,
    COL_VOXELS,
    COLUMNS,
    DEBOUNCE_MS,
    HIDDEN,
    class_names,
    source_image,
)
from .widget import SegmentTableWidget

__all__ = ["COLUMNS", "COL_LOCK", "COL_NAME", "COL_SHOW", "COL_SWATCH", "COL_VOLUME", "COL_VOXELS",
           "DEBOUNCE_MS", "HIDDEN", "SegmentTableWidget", "class_names", "source_image"]
