"""NIfTI-1/2 (.nii, .nii.gz) reading with nibabel, and the inverse mapping used by the writer.

Display convention
------------------
NIfTI voxels can be stored in any axis order (RAS, LPS, LAS...). The reader lays them
out, by axis permutations and flips only (no resampling, values untouched), in the
radiological display layout of their slice plane (the stored third axis), as the DICOM
reader does (see :mod:`training.io.volume`): an axial image has anterior at the top and
the patient's right on the viewer's left, whether it was stored RAS or LPS, and a NIfTI
and the DICOM it came from appear the same way up. 4-D images become ``(t, z, y, x)``.

The original affine, header and the reorientation are kept in
``volume.metadata["nifti"]``; :func:`to_source_layout` undoes the reorientation
so that labels written back use the source affine bit for bit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from training.io.errors import ImageReadError
from training.io.limits import GZIP_MAX_RATIO, check_declared_size, check_regular_file
from training.io.volume import Volume, canonical_layout, to_source_grid

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a .nii/.nii.gz file into a :class:`Volume` (see the module doc for the layout)."""
    import nibabel as nib
    path = str(path)
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    check_regular_file(path)
    try:
        img = nib.load(path, mmap=False)
    except Exception as e:  # noqa: BLE001 - ImageFileError, EOFError, gzip errors...
        raise ImageReadError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(path, f"is a {type(img).__name__}, not a NIfTI image")
    notes: list[str] = []
    _check_header(img, path)
    affine = _usable_affine(img, path, notes)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - truncated .nii.gz: EOFError / zlib.error / OSError
        raise ImageReadError(
            path, f"image data is truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    if data.ndim > 4:
        squeezed = data.reshape(data.shape[:4] + tuple(s for s in data.shape[4:] if s != 1))
        if squeezed.ndim > 4:
            raise ImageReadError(
                path, f"{data.ndim}-D data of shape {data.shape} is not supported (up to 4-D)"
            )
        data = squeezed
    if data.ndim < 2:
        raise ImageReadError(path, f"data of shape {data.shape} is not an image")
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    orig_shape = data.shape
    if data.ndim == 2:
        data = data[:, :, None]
    # (i, j, k[, t]) → ([t,] k, j, i) with the (k, j, i) → LPS affine, then the display layout
    axes = (2, 1, 0) if data.ndim == 3 else (3, 2, 1, 0)
    data = data.transpose(axes)
    lps = RAS_TO_LPS @ affine
    stored_affine = np.eye(4)
    stored_affine[:3, :3] = lps[:3, [2, 1, 0]]
    stored_affine[:3, 3] = lps[:3, 3]
    data, vol_affine, orientation = canonical_layout(data, stored_affine)
    data = np.ascontiguousarray(data)
    if orientation["oblique_deg"] > 0.5:
        notes.append(f"{path}: {orientation['note']}")
    if data.ndim == 3 and data.shape[0] == 1 and len(orig_shape) == 2:
        data = data[0]
    hdr = img.header
    descrip = ""
    try:
        descrip = hdr["descrip"].item().decode("latin-1").strip("\x00 ").strip()
    except Exception:  # noqa: BLE001
        pass
    name = Path(path).name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    intent = ""
    try:
        intent = str(hdr.get_intent()[0])
    except Exception:  # noqa: BLE001
        pass
    is_label = intent == "label" or (
        np.issubdtype(data.dtype, np.integer)
        and name.lower().endswith(("seg", "label", "labels", "mask"))
    )
    if is_label and data.dtype.kind == "f":
        # scaled label maps come back as floats (1.9999999 for 2): round, never truncate
        rounded = np.rint(data)
        if np.all(np.isfinite(data)) and np.abs(data - rounded).max(initial=0) <= 1e-3:
            lo, hi = rounded.min(initial=0), rounded.max(initial=0)
            dtype = np.uint8 if lo >= 0 and hi < 256 else np.uint16 if lo >= 0 and hi < 65536 \
                else np.int32
            data = rounded.astype(dtype)
        else:
            is_label = False
            notes.append(f"{path}: marked as a label map but holds non-integer values; "
                         "shown as an image")
    meta = {
        "source_kind": "nifti",
        "files": [path],
        "affine": vol_affine,
        "nifti": {
            "affine": affine.copy(),  # exactly as nibabel reports it
            "header": hdr.copy(),  # sform/qform codes, units, intent...
            "orientation": orientation,  # stored (k, j, i) axes → displayed axes
            "shape": tuple(int(s) for s in orig_shape),
        },
        "orientation": orientation,
        "description": descrip,
        "warnings": notes,
    }
    return Volume(
        array=data,
        affine=vol_affine,
        modality="OT",
        window=None,
        name=name,
        kind="labels" if is_label else "image",
        metadata=meta,
    )


def _check_header(img, path: str) -> None:
    """Refuse what the header declares before the data is read: sizes beyond the file (or
    beyond what gzip can expand to) or the ceiling, and value types we cannot show."""
    hdr = img.header
    try:
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
    except Exception as e:  # noqa: BLE001 - nonsense dims / datatype codes
        raise ImageReadError(path, f"invalid NIfTI header ({type(e).__name__}: {e})") from None
    if dtype.fields is not None:  # RGB24 / RGBA32 records
        raise ImageReadError(path, f"colour (RGB) NIfTI data ({dtype}) is not supported; "
                                   "save it as a greyscale or a PNG/TIFF image")
    if dtype.kind == "c":
        raise ImageReadError(path, f"complex-valued NIfTI data ({dtype}) is not supported; "
                                   "save the magnitude instead")
    if dtype.kind not in "biuf":
        raise ImageReadError(path, f"NIfTI data type {dtype} is not supported")
    size = os.path.getsize(path)
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    gz = path.lower().endswith(".gz")
    check_declared_size(path, shape, dtype.itemsize,
                        stored_bytes=offset + math.prod(shape) * dtype.itemsize,
                        available=size, compressed=gz, max_ratio=GZIP_MAX_RATIO,
                        what="NIfTI data")


def _usable_affine(img, path: str, notes: list[str]) -> np.ndarray:
    """The header's affine if it is finite and invertible, else the qform, else the voxel
    sizes alone (``pixdim``), else the identity, with a note saying which was used."""
    hdr = img.header
    candidates = [("sform/qform", lambda: img.affine)]
    if hasattr(hdr, "get_qform"):
        candidates.append(("qform", lambda: hdr.get_qform()))
    candidates.append(("voxel sizes (pixdim)", lambda: hdr.get_base_affine()))
    for i, (name, get) in enumerate(candidates):
        try:
            a = np.asarray(get(), dtype=np.float64)
        except Exception:  # noqa: BLE001 - codes without a matrix, odd pixdims
            continue
        if a is None or a.shape != (4, 4) or not np.all(np.isfinite(a)):
            continue
        if abs(np.linalg.det(a[:3, :3])) < 1e-12:
            continue
        if i:
            notes.append(f"{path}: the header's affine is not usable (NaN, infinite or zero); "
                         f"placed with its {name} instead")
        return a
    notes.append(f"{path}: no usable affine in the header (NaN or zero); 1 mm voxels assumed")
    return np.eye(4)


def to_source_layout(array: np.ndarray, nifti_meta: dict) -> np.ndarray:
    """Undo the display reorientation: a spatial (z, y, x) or (y, x) array → stored voxel order."""
    a = np.asarray(array)
    orig_shape = tuple(nifti_meta["shape"])
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"labels must be 2-D or 3-D, got shape {np.shape(array)}")
    a = to_source_grid(a, nifti_meta["orientation"]).transpose(2, 1, 0)
    spatial = orig_shape[:3] if len(orig_shape) >= 3 else orig_shape[:2] + (1,)
    if a.shape != tuple(spatial):
        raise ValueError(
            f"labels of shape {np.shape(array)} do not match the image grid {orig_shape[:3]}"
        )
    if len(orig_shape) == 2:
        a = a[:, :, 0]
    return np.ascontiguousarray(a)
