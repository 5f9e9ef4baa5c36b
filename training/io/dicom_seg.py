"""DICOM-SEG files → a labels :class:`Volume` (through highdicom).

The volume's metadata carries ``label_names`` and ``label_colors`` (label value → RGB in
0-1, from each segment's RecommendedDisplayCIELabValue) so that a reopened SEG shows the
names and colours it was saved with. Label values written by our writer (TrackingID
``napari-label-N``) are restored; other SEGs number their segments 1..N.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.io.dicom_frames import _safe_name
from training.io.errors import ImageReadError
from training.io.volume import Volume, canonical_layout, canonical_slice_order


def _pixel_measures(ds):
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        return shared[0].PixelMeasuresSequence[0]
    return None


def _complete_pixel_measures(ds) -> bool:
    """Add a missing SliceThickness to the shared Pixel Measures (SEGs written by tools
    from sources without one; highdicom refuses them). Returns True if it changed ``ds``."""
    pm = _pixel_measures(ds)
    if pm is None or "PixelSpacing" not in pm or pm.get("SliceThickness"):
        return False
    pm.SliceThickness = pm.get("SpacingBetweenSlices") or 1.0
    return True


def segment_colors(ds) -> dict[int, tuple[float, float, float]]:
    """Segment number → RGB (0-1) from RecommendedDisplayCIELabValue (CIELab → sRGB)."""
    import highdicom as hd

    out = {}
    for item in ds.get("SegmentSequence", []):
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is None or len(lab) != 3:
            continue
        try:
            rgb = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
        except (ValueError, TypeError):
            continue
        out[int(item.SegmentNumber)] = tuple(float(c) / 255.0 for c in rgb)
    return out


def _as_little_endian(ds) -> None:
    """Big-endian SEGs (highdicom parses little endian only): the elements are decoded
    already, so only the pixel words need swapping (OB bytes are order-free)."""
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or ts.is_little_endian or ts.is_compressed:
        return
    if "PixelData" in ds and ds["PixelData"].VR == "OW" and len(ds.PixelData) % 2 == 0:
        ds.PixelData = np.frombuffer(ds.PixelData, ">u2").astype("<u2").tobytes()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _has_plane_positions(ds) -> bool:
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(kw)
        if groups and "PlanePositionSequence" in groups[0]:
            return True
    return False


def _read_seg_without_geometry(seg, ds):
    """Labels of a SEG whose source has no patient geometry (one source image), on the
    source's pixel grid, with the geometry-free affine our image reader gives such images
    (columns along x, rows along y, spacing from Pixel Measures or 1)."""
    sources = seg.get_source_image_uids()
    if len(sources) != 1:
        raise ValueError(f"no patient geometry and {len(sources)} source images")
    arr = seg.get_pixels_by_source_instance([sources[0][2]], combine_segments=True,
                                            relabel=False)
    pm = _pixel_measures(ds)
    spacing = [float(v) for v in (pm.get("PixelSpacing") or [])] if pm is not None else []
    row_sp, col_sp = spacing if len(spacing) == 2 and min(spacing) > 0 else (1.0, 1.0)
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, col_sp], [0, row_sp, 0], [1.0, 0, 0]]
    return np.asarray(arr), affine


def _read_seg(ds, path: str) -> Volume:
    import highdicom as hd

    try:
        _as_little_endian(ds)
        try:
            seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        except AttributeError:
            if not _complete_pixel_measures(ds):
                raise
            seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        if _has_plane_positions(ds):
            vol = seg.get_volume(combine_segments=True, relabel=False)
            arr, affine = np.asarray(vol.array), np.asarray(vol.affine, dtype=np.float64)
        else:  # a SEG of a radiograph, ultrasound... : no patient geometry, one source image
            arr, affine = _read_seg_without_geometry(seg, ds)
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(path, f"cannot read DICOM-SEG ({type(e).__name__}: {e})") from None
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    arr, affine, _ = canonical_slice_order(arr, affine)
    pm = _pixel_measures(ds)
    step = pm is not None and (pm.get("SpacingBetweenSlices") or pm.get("SliceThickness"))
    if arr.shape[0] == 1 and step:
        # one plane: no spacing to measure between slices; use the header's, as the image does
        normal = affine[:3, 0] / (np.linalg.norm(affine[:3, 0]) or 1.0)
        affine[:3, 0] = normal * float(step)
    arr, affine, orientation = canonical_layout(arr, affine)  # as the image is shown
    names, values = {}, {}
    for item in ds.get("SegmentSequence", []):
        num = int(item.SegmentNumber)
        names[num] = str(item.get("SegmentLabel", f"Segment {num}"))
        tid = str(item.get("TrackingID", "") or "")
        if tid.startswith("napari-label-"):
            try:
                values[num] = int(tid.rsplit("-", 1)[1])
            except ValueError:
                pass
    if values and any(values.get(k, k) != k for k in names):
        lut = np.arange(max(names) + 1, dtype=np.int64)
        for k, v in values.items():
            lut[k] = v
        arr = lut[arr.astype(np.int64)]
    arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)
    if arr.shape[0] == 1:
        arr = arr[0]
    label_names = {values.get(k, k): n for k, n in names.items()}
    label_colors = {values.get(k, k): c for k, c in segment_colors(ds).items()}
    meta = {
        "source_kind": "dicom-seg",
        "files": [path],
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))],
        "modality": "SEG",
        "affine": affine,
        "label_names": label_names,
        "label_colors": label_colors,
        "orientation": orientation,
        "warnings": [],
    }
    return Volume(
        array=arr,
        affine=affine,
        modality="SEG",
        window=None,
        name=_safe_name(ds, Path(path).stem),
        kind="labels",
        metadata=meta,
    )
