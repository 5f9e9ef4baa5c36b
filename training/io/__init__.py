"""Radiology image I/O for the engine and the napari plugin (no Qt/napari imports).

Read: :func:`read_image` (DICOM files/folders/series, enhanced multi-frame,
DICOM-SEG, NIfTI, PNG/JPEG/TIFF) → list of :class:`Volume` with ``.report``.
Write: :func:`write_labels_nifti`, :func:`write_labels_dicom_seg`,
:func:`write_labels_png` (all atomic). Window/level: :mod:`.windowing`.
See :mod:`.volume` for the array/affine conventions.
"""

from training.io.errors import ImageReadError, ImageWriteError, MissingDecoderError
from training.io.read import LoadReport, ReadResult, read_image
from training.io.volume import Volume
from training.io.windowing import CT_PRESETS, default_window, presets_for_modality, window_to_unit
from training.io.writers import (
    write_labels,
    write_labels_dicom_seg,
    write_labels_nifti,
    write_labels_png,
)

__all__ = [
    "CT_PRESETS",
    "ImageReadError",
    "ImageWriteError",
    "LoadReport",
    "MissingDecoderError",
    "ReadResult",
    "Volume",
    "default_window",
    "presets_for_modality",
    "read_image",
    "window_to_unit",
    "write_labels",
    "write_labels_dicom_seg",
    "write_labels_nifti",
    "write_labels_png",
]
