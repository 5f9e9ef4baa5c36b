"""DICOM-SEG writing (highdicom): labels drawn on a DICOM series → a Segmentation that
references it, on the series' own pixel grid. Every write is atomic."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from training.io.errors import ImageWriteError
from training.io.volume import Volume, to_source_grid
from training.io.writer_common import _DEFAULT_COLOURS, _label_array, _meta
from training.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

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
