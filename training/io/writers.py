"""Writers for label maps: NIfTI, DICOM-SEG (highdicom, :mod:`.dicom_seg_writer`) and PNG.
Every write is atomic.

``reference`` is the :class:`Volume` the labels were drawn on, or its
``metadata`` dict (what the napari layer carries). The labels array has the
reference's spatial layout (``(z, y, x)`` or ``(y, x)``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.io.dicom_seg_writer import FRAME_OF_REFERENCE_NOTE, write_labels_dicom_seg
from training.io.errors import ImageWriteError
from training.io.nifti import RAS_TO_LPS, to_source_layout
from training.io.volume import Volume, to_source_grid
from training.io.writer_common import _label_array, _meta, _small_dtype
from training.runtime.atomic import atomic_path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- NIfTI
def write_labels_nifti(
    path: str | os.PathLike,
    labels: np.ndarray,
    reference: Volume | Mapping | None = None,
    affine: np.ndarray | None = None,
    segment_names: Mapping[int, str] | None = None,
    colors: Mapping[int, Sequence[float]] | None = None,
) -> Path:
    """Write a label map as .nii/.nii.gz.

    * With ``segment_names`` and/or ``colors`` (RGB(A) in 0-1 or 0-255), a label table is
      written beside it as ``<name>.label.txt`` in ITK-SNAP's label description format
      (see :mod:`training.io.label_table`); :func:`training.io.read_image` reads it back.

    * If the reference came from NIfTI, the labels are put back in its stored voxel
      order and written with its header and affine, so the affine (sform and qform)
      round-trips bit for bit.
    * Otherwise the reference's LPS ``affine`` (or the ``affine`` argument, same
      convention) is converted to NIfTI RAS.
    """
    import nibabel as nib

    path = Path(path)
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise ImageWriteError(path, "a NIfTI file name must end with .nii or .nii.gz")
    a = _small_dtype(_label_array(labels, path))
    meta = _meta(reference)
    nmeta = meta.get("nifti")
    if nmeta is not None and affine is None:
        try:
            data = to_source_layout(a, nmeta)
        except ValueError as e:
            raise ImageWriteError(path, str(e)) from None
        src_hdr = nmeta["header"]
        hdr = src_hdr.copy()
        img_cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        img = img_cls(data, nmeta["affine"], header=hdr)
        # copy the raw geometry fields so that sform *and* qform are bit-identical
        for key in (
            "qform_code",
            "sform_code",
            "quatern_b",
            "quatern_c",
            "quatern_d",
            "qoffset_x",
            "qoffset_y",
            "qoffset_z",
            "srow_x",
            "srow_y",
            "srow_z",
        ):
            img.header[key] = src_hdr[key]
        img.header["pixdim"][:4] = src_hdr["pixdim"][:4]
        img.header["xyzt_units"] = src_hdr["xyzt_units"]
    else:
        lps = np.asarray(affine if affine is not None else meta.get("affine", np.eye(4)), float)
        orientation = meta.get("orientation") if affine is None else None
        if orientation:  # back from the display layout to the source's own voxel grid
            try:
                a = to_source_grid(a if a.ndim == 3 else a[None], orientation)
            except ValueError as e:
                raise ImageWriteError(path, str(e)) from None
            lps = np.asarray(orientation["source_affine"], float)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ImageWriteError(path, f"labels must be 2-D or 3-D, got shape {a.shape}")
        data = np.ascontiguousarray(a.transpose(2, 1, 0))  # (k, j, i) → (i, j, k)
        ijk = np.eye(4)
        ijk[:3, :3] = lps[:3, [2, 1, 0]]
        ijk[:3, 3] = lps[:3, 3]
        ras = RAS_TO_LPS @ ijk
        img = nib.Nifti1Image(data, ras)
        img.header.set_sform(ras, code=1)
        img.header.set_qform(ras, code=1)
        img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_intent("label")
    img.header["cal_min"], img.header["cal_max"] = 0, float(data.max(initial=0))
    gz = str(path).lower().endswith(".gz")
    payload = img.to_bytes()  # single-file .nii bytes (the temp name hides the extension)
    if gz:
        import gzip

        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    try:
        if segment_names or colors:
            from training.io.label_table import label_sidecar_path, write_itksnap_labels

            present = {int(v) for v in np.unique(data) if v != 0}
            write_itksnap_labels(
                label_sidecar_path(path),
                {int(k): str(v) for k, v in (segment_names or {}).items() if int(k) > 0},
                {int(k): v for k, v in (colors or {}).items()
                 if int(k) > 0 and (int(k) in present or int(k) in (segment_names or {}))})
        with atomic_path(path, suffix=".nii.gz" if gz else ".nii") as tmp:
            tmp.write_bytes(payload)
    except OSError as e:
        raise ImageWriteError(path, f"{type(e).__name__}: {e}") from None
    return path


# ------------------------------------------------------------------------------ PNG
def write_labels_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a 2-D label map as an 8- or 16-bit grayscale PNG (values preserved)."""
    import imageio.v3 as iio

    path = Path(path)
    a = _label_array(labels, path)
    a = np.squeeze(a) if a.ndim > 2 and all(s == 1 for s in a.shape[:-2]) else a
    if a.ndim != 2:
        raise ImageWriteError(path, f"PNG holds 2-D labels only, got shape {np.shape(labels)}")
    if a.max(initial=0) >= 2**16:
        raise ImageWriteError(path, "label values above 65535 do not fit a PNG")
    a = a.astype(np.uint8 if a.max(initial=0) < 256 else np.uint16)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            iio.imwrite(tmp, a, extension=".png")
    except OSError as e:
        raise ImageWriteError(path, f"{type(e).__name__}: {e}") from None
    return path


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    reference: Volume | Mapping | None = None,
    **kwargs: Any,
) -> Path:
    """Pick the writer from the extension: .nii/.nii.gz, .dcm (DICOM-SEG) or .png."""
    low = str(path).lower()
    if low.endswith((".nii", ".nii.gz")):
        return write_labels_nifti(path, labels, reference, **kwargs)
    if low.endswith((".dcm", ".dicom")):
        return write_labels_dicom_seg(path, labels, reference, **kwargs)
    if low.endswith(".png"):
        return write_labels_png(path, labels)
    raise ImageWriteError(path, "unknown extension (use .nii, .nii.gz, .dcm or .png)")


__all__ = [
    "FRAME_OF_REFERENCE_NOTE",
    "write_labels",
    "write_labels_dicom_seg",
    "write_labels_nifti",
    "write_labels_png",
]
