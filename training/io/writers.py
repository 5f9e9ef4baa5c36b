"""Writers for label maps: NIfTI, DICOM-SEG (highdicom) and PNG. Every write is atomic.

``reference`` is the :class:`Volume` the labels were drawn on, or its
``metadata`` dict (what the napari layer carries). The labels array has the
reference's spatial layout (``(z, y, x)`` or ``(y, x)``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.io.errors import ImageWriteError
from training.io.nifti import RAS_TO_LPS, to_source_layout
from training.io.volume import Volume, to_source_grid
from training.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------- DICOM-SEG
#: Type 2 attributes (present, may be empty) of the Patient / General Study modules that a
#: SEG copies from its source; anonymised or synthetic series often omit them.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
FRAME_OF_REFERENCE_NOTE = "FrameOfReferenceUID created: the source series had none"


def pydicom_uid(value):
    from pydicom.uid import UID

    return UID(str(value or ""))


def _clean_da(value) -> str:
    """A DICOM date (YYYYMMDD) from common variants (YYYY.MM.DD, YYYY-MM-DD), else empty."""
    import re

    digits = re.sub(r"[.\-/]", "", str(value or "").strip())
    return digits if re.fullmatch(r"\d{8}", digits) else ""


def _clean_tm(value) -> str:
    """A DICOM time (HHMMSS.FFFFFF) from common variants (HH:MM:SS), else empty."""
    import re

    t = str(value or "").strip().replace(":", "")
    return t if re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", t) else ""


def _has_patient_geometry(ds) -> bool:
    """ImagePositionPatient at the root, or Plane Position in the functional groups."""
    if "ImagePositionPatient" in ds:
        return True
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(kw)
        if groups and "PlanePositionSequence" in groups[0]:
            return True
    return False


def _keep_pixel_size(seg, affine: np.ndarray) -> None:
    """A SEG of an image without patient geometry (radiograph, ultrasound) keeps the pixel
    size the image was shown with (the reader may have taken ImagerPixelSpacing, or 1)."""
    from pydicom.dataset import Dataset

    if "SharedFunctionalGroupsSequence" not in seg:
        seg.SharedFunctionalGroupsSequence = [Dataset()]
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" not in shared:
        shared.PixelMeasuresSequence = [Dataset()]
    sp = np.linalg.norm(np.asarray(affine, float)[:3, 1:3], axis=0)
    shared.PixelMeasuresSequence[0].PixelSpacing = [float(f"{v:.6g}") for v in sp]


def _prepare_sources(headers, slice_spacing: float) -> tuple[list, bool]:
    """Copies of the source headers completed so that a valid SEG can be built.

    * missing Type 2 attributes are added empty (as the standard allows);
    * a missing FrameOfReferenceUID is created, the same for every image of the series
      (derived from its SeriesInstanceUID, so every SEG of that series shares it);
    * a missing SliceThickness is set to the slice spacing the reader used (readers,
      ours included, need it in the SEG's Pixel Measures).

    Returns ``(headers, frame_of_reference_created)``. The caller's headers are untouched.
    """
    from pydicom.uid import generate_uid

    out = [copy.deepcopy(h) for h in headers]
    created = False
    frame_uid = None
    series = str(out[0].get("SeriesInstanceUID", "") or "") or str(out[0].get("SOPInstanceUID", ""))
    for ds in out:
        for key in _TYPE2_COPIED:
            if key not in ds:
                setattr(ds, key, "")
        for key, fix in (("StudyDate", _clean_da), ("PatientBirthDate", _clean_da),
                         ("StudyTime", _clean_tm)):
            ds[key].value = fix(ds[key].value)  # '11:20:00' (ACR-NEMA style) -> '112000'
        for key in ("StudyInstanceUID", "SeriesInstanceUID"):  # Type 1 in the source too
            if not ds.get(key):
                setattr(ds, key, generate_uid(entropy_srcs=[series, key] if series else None))
        if not ds.get("Modality"):
            ds.Modality = "OT"
        if not ds.get("FrameOfReferenceUID") and _has_patient_geometry(ds):
            if frame_uid is None:
                series = str(ds.get("SeriesInstanceUID", "") or "")
                frame_uid = generate_uid(entropy_srcs=[series, "frame-of-reference"]
                                         if series else None)
            ds.FrameOfReferenceUID = frame_uid
            created = True
        if "PixelSpacing" in ds and not ds.get("SliceThickness") \
                and "PerFrameFunctionalGroupsSequence" not in ds:
            ds.SliceThickness = float(f"{slice_spacing:.6g}")
    return out, created


def _lab_colour(rgb):
    import highdicom as hd

    return hd.color.CIELabColor.from_rgb(*[int(c) for c in rgb[:3]])


def write_labels_dicom_seg(
    path: str | os.PathLike,
    labels: np.ndarray,
    reference: Volume | Mapping,
    segment_names: Mapping[int, str] | None = None,
    colors: Mapping[int, Sequence[float]] | None = None,
    algorithm_name: str = "VIS-MAE",
    algorithm_version: str = "0.1",
    series_description: str = "VIS-MAE segmentation",
    manual: bool = False,
) -> Path:
    """Write a label map as a DICOM Segmentation (binary, one segment per label value).

    The reference must come from DICOM (its ``metadata["dicom_headers"]``): the
    SEG references the source series and frame of reference, copies the patient
    and study, and lists each label value as a segment with its name, colour
    (``colors[value]`` as RGB 0-255 or 0-1) and the algorithm name.

    Sources that omit Type 2 attributes get them empty in the SEG; a source series without
    FrameOfReferenceUID gets one created, and the SEG says so in its ContentDescription
    (:data:`FRAME_OF_REFERENCE_NOTE`; also logged as a warning).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    meta = _meta(reference)
    headers = meta.get("dicom_headers")
    if not headers:
        raise ImageWriteError(
            path,
            "DICOM-SEG needs a source image read from DICOM "
            "(the reference has no DICOM headers); save as NIfTI instead",
        )
    a = _label_array(labels, path)
    if a.ndim == 2:
        a = a[None]
    orientation = meta.get("orientation")
    if orientation:  # back from the display layout to the sorted source slices
        try:
            a = to_source_grid(a, orientation)
        except ValueError as e:
            raise ImageWriteError(path, str(e)) from None
    values = [int(v) for v in np.unique(a) if v != 0]
    if not values:
        raise ImageWriteError(path, "the label map is empty: nothing to write")
    # one segment per label value, numbered 1..N; label value kept in the TrackingID
    lut = np.zeros(int(a.max()) + 1, dtype=np.uint16)
    for n, v in enumerate(values, start=1):
        lut[v] = n
    seg_map = lut[a]
    frame_order = meta.get("frame_order")
    if frame_order is not None:  # multi-frame source: pixel frames in source frame order
        n_src = int(headers[0].get("NumberOfFrames", 1) or 1)
        if seg_map.shape[0] != len(frame_order):
            raise ImageWriteError(
                path, f"labels have {seg_map.shape[0]} slices, the source image {len(frame_order)}"
            )
        full = np.zeros((n_src,) + seg_map.shape[1:], seg_map.dtype)
        full[np.asarray(frame_order)] = seg_map
        seg_map = full
    elif seg_map.shape[0] != len(headers):
        raise ImageWriteError(
            path, f"labels have {seg_map.shape[0]} slices, the source series {len(headers)} images"
        )
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if seg_map.shape[1:] != (rows, cols):
        raise ImageWriteError(
            path,
            f"labels of shape {seg_map.shape[1:]} do not match the source images ({rows}x{cols})",
        )
    affine = np.asarray((orientation or {}).get("source_affine", meta.get("affine", np.eye(4))),
                        float)
    headers, new_frame = _prepare_sources(headers, float(np.linalg.norm(affine[:3, 0])) or 1.0)
    sop_class = pydicom_uid(headers[0].get("SOPClassUID", ""))
    if sop_class.is_valid and sop_class.is_retired:
        raise ImageWriteError(path, f"the source's SOP class ({sop_class.name}, "
                              f"{sop_class}) is retired, "
                              "and a DICOM-SEG cannot reference it; save as NIfTI instead")
    if str(headers[0].get("Modality", "")).upper() == "RTDOSE":
        raise ImageWriteError(path, "the source is an RT Dose grid, which a DICOM-SEG cannot "
                              "reference; save as NIfTI instead")
    n_frames = len(headers) * int(headers[0].get("NumberOfFrames", 1) or 1)
    if n_frames > 1 and not _has_patient_geometry(headers[0]):
        raise ImageWriteError(
            path, f"the source image has {n_frames} frames but no patient geometry "
            "(no ImagePositionPatient or Plane Position functional group), so a DICOM-SEG "
            "cannot be placed on it; save as NIfTI instead")
    if new_frame:
        log.warning("%s: %s (%s)", path, FRAME_OF_REFERENCE_NOTE, headers[0].FrameOfReferenceUID)
    names = dict(segment_names or {})
    colours = dict(colors or {})
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = []
    for n, v in enumerate(values, start=1):
        rgb = colours.get(v, _DEFAULT_COLOURS[(v - 1) % len(_DEFAULT_COLOURS)])
        rgb = np.asarray(rgb, float)[:3]
        if rgb.max() <= 1.0:
            rgb = rgb * 255.0
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=str(names.get(v, f"Label {v}"))[:64],
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=(
                    hd.seg.SegmentAlgorithmTypeValues.MANUAL
                    if manual
                    else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
                ),
                algorithm_identification=None if manual else algo,
                tracking_id=f"napari-label-{v}",
                tracking_uid=hd.UID(),
                display_color=_lab_colour(np.clip(np.round(rgb), 0, 255)),
            )
        )
    try:
        seg = hd.seg.Segmentation(
            source_images=list(headers),
            pixel_array=seg_map,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(meta.get("seg_series_number", 9901)),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="napari-vismae",
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version,
            device_serial_number="0",
            series_description=series_description,
            content_description=FRAME_OF_REFERENCE_NOTE if new_frame else None,
            omit_empty_frames=False,
        )
    except Exception as e:  # noqa: BLE001 - highdicom validates many source attributes
        raise ImageWriteError(
            path, f"cannot build the DICOM-SEG ({type(e).__name__}: {e})"
        ) from None
    if not _has_patient_geometry(headers[0]):
        _keep_pixel_size(seg, affine)
    shared = seg.get("SharedFunctionalGroupsSequence")
    if n_frames == 1 and shared and "PixelMeasuresSequence" in shared[0]:
        # one plane: highdicom writes SpacingBetweenSlices 1.0; keep the source's (or none),
        # which is what readers, ours included, place the plane's slab by
        pm = shared[0].PixelMeasuresSequence[0]
        spacing = headers[0].get("SpacingBetweenSlices")
        if spacing:
            pm.SpacingBetweenSlices = spacing
        elif "SpacingBetweenSlices" in pm:
            del pm.SpacingBetweenSlices
    try:
        with atomic_path(path, suffix=".dcm") as tmp:
            seg.save_as(tmp)
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
