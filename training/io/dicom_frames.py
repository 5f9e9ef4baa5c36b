"""DICOM datasets → frames: per-frame geometry and value transforms (single, classic and
enhanced multi-frame)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.io.dicom_files import PIXEL_KEYWORDS, _no_pixel_reason, check_pixel_budget
from training.io.errors import ImageReadError


@dataclass
class _Frame:
    """One 2-D frame: where it is, and how to get its pixels."""

    path: str
    ds: Any  # pydicom Dataset (shared by all frames of a multi-frame file)
    frame: int | None  # None for single-frame files
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    window: tuple[float, float] | None = None
    instance: int = 0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def _floats(value, n: int | None = None) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if n is not None and arr.size != n:
        return None
    if not np.all(np.isfinite(arr)):
        return None
    return arr


def _first(value) -> float | None:
    arr = _floats(value)
    return None if arr is None or arr.size == 0 else float(arr[0])


def _spacing(value) -> np.ndarray | None:
    arr = _floats(value, 2)
    return arr if arr is not None and np.all(arr > 0) else None


def _slope(item, keyword: str, path: str) -> float | None:
    """A rescale slope: None when absent; a present slope must be finite and non-zero
    (``RescaleSlope = 0`` would make every pixel the intercept)."""
    raw = item.get(keyword)
    if raw is None or raw == "":
        return None
    value = _first(raw)
    if value is None or value == 0.0:
        raise ImageReadError(path, f"{keyword} {str(raw)[:40]!r} is not a finite non-zero number; "
                                   "the pixel values cannot be computed")
    return value


def _orientation(value, notes: list[str]) -> np.ndarray | None:
    """ImageOrientationPatient validated: two non-zero, non-parallel direction vectors,
    normalised to unit length (a length-2 vector would double the spacing). Problems are
    appended to ``notes``; a degenerate orientation becomes None (treated as missing)."""
    arr = _floats(value, 6)
    if arr is None:
        if value is not None and len(notes) < 3:
            notes.append("ImageOrientationPatient is not six finite numbers; ignored")
        return None
    row, col = arr[:3], arr[3:]
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if nr < 1e-6 or nc < 1e-6 or np.linalg.norm(np.cross(row / nr, col / nc)) < 1e-3:
        msg = (f"ImageOrientationPatient {np.round(arr, 4).tolist()} has a zero or parallel "
               "direction vector; orientation ignored (axial assumed)")
        if msg not in notes:
            notes.append(msg)
        return None
    if abs(nr - 1.0) > 1e-3 or abs(nc - 1.0) > 1e-3:
        msg = (f"ImageOrientationPatient vectors have lengths {nr:.4g} and {nc:.4g}, not 1; "
               "normalised")
        if msg not in notes:
            notes.append(msg)
    if abs(float(np.dot(row / nr, col / nc))) > 1e-2:
        msg = "ImageOrientationPatient direction vectors are not perpendicular"
        if msg not in notes:
            notes.append(msg)
    return np.concatenate([row / nr, col / nc])


def _window_of(item) -> tuple[float, float] | None:
    c, w = _first(item.get("WindowCenter")), _first(item.get("WindowWidth"))
    if c is None or w is None or w <= 0:
        return None
    return c, w


def _seq_item(groups, keyword):
    """First item of ``keyword`` sequence inside a functional-group item (or None)."""
    if groups is None:
        return None
    seq = groups.get(keyword)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _fg(per_frame, shared, keyword):
    """Look a functional group up per frame first, then in the shared groups."""
    return _seq_item(per_frame, keyword) or _seq_item(shared, keyword)


def _safe_name(ds, fallback: str) -> str:
    modality = str(ds.get("Modality", "") or "").strip() or "DICOM"
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    if not desc:
        num = ds.get("SeriesNumber")
        desc = f"series {num}" if num not in (None, "") else fallback
    return f"{modality} {desc}"


def frames_of(ds, path: str) -> list[_Frame]:
    """Split a dataset into frames with their geometry and value transforms."""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise ImageReadError(path, _no_pixel_reason(ds))
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise ImageReadError(path, "Rows/Columns missing or zero")
    check_pixel_budget(ds, path)  # before a million frames are listed or anything decoded
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    instance = int(_first(ds.get("InstanceNumber")) or 0)
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    top_window = _window_of(ds)
    top_ps = _spacing(ds.get("PixelSpacing"))
    if top_ps is None:
        top_ps = _spacing(ds.get("ImagerPixelSpacing"))
    top_slope = _slope(ds, "RescaleSlope", path)
    top_inter = _first(ds.get("RescaleIntercept"))
    if "DoseGridScaling" in ds and top_slope is None:
        top_slope = _slope(ds, "DoseGridScaling", path)
    top_pos = _floats(ds.get("ImagePositionPatient"), 3)
    geometry: list[str] = []
    top_ori = _orientation(ds.get("ImageOrientationPatient"), geometry)

    if per_frame_seq is not None or shared is not None:  # enhanced multi-frame
        frames = []
        for f in range(n_frames):
            pf = per_frame_seq[f] if per_frame_seq is not None and f < len(per_frame_seq) else None
            pos = _fg(pf, shared, "PlanePositionSequence")
            ori = _fg(pf, shared, "PlaneOrientationSequence")
            meas = _fg(pf, shared, "PixelMeasuresSequence")
            pvt = _fg(pf, shared, "PixelValueTransformationSequence")
            voi = _fg(pf, shared, "FrameVOILUTSequence")
            content = _fg(pf, None, "FrameContentSequence")
            ps = _spacing(meas.get("PixelSpacing")) if meas is not None else None
            slope = _slope(pvt, "RescaleSlope", path) if pvt is not None else None
            inter = _first(pvt.get("RescaleIntercept")) if pvt is not None else None
            extra = {}
            if content is not None:
                extra["stack"] = str(content.get("StackID", "") or "")
                extra["temporal"] = content.get("TemporalPositionIndex")
            if meas is not None:
                extra["thickness"] = _first(meas.get("SpacingBetweenSlices")) or _first(
                    meas.get("SliceThickness")
                )
            frames.append(
                _Frame(
                    path,
                    ds,
                    f,
                    _floats(pos.get("ImagePositionPatient"), 3) if pos is not None else top_pos,
                    _orientation(ori.get("ImageOrientationPatient"), geometry)
                    if ori is not None
                    else top_ori,
                    tuple(ps)
                    if ps is not None
                    else (tuple(top_ps) if top_ps is not None else None),
                    top_slope if slope is None else slope,
                    top_inter if inter is None else inter,
                    (_window_of(voi) if voi is not None else None) or top_window,
                    instance,
                    extra,
                )
            )
        for fr in frames:
            fr.slope = 1.0 if fr.slope is None else fr.slope
            fr.intercept = 0.0 if fr.intercept is None else fr.intercept
            fr.extra["geometry"] = geometry
        return frames

    slope = 1.0 if top_slope is None else top_slope
    inter = 0.0 if top_inter is None else top_inter
    ps = tuple(top_ps) if top_ps is not None else None
    if n_frames == 1:
        extra = {
            "thickness": _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness")),
            "geometry": geometry,
        }
        return [
            _Frame(path, ds, None, top_pos, top_ori, ps, slope, inter, top_window, instance, extra)
        ]
    # classic multi-frame: RT dose grid offsets, or a fixed spacing, or time (cine)
    offsets = _floats(ds.get("GridFrameOffsetVector"))
    step = _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness"))
    frames = []
    for f in range(n_frames):
        pos = None
        if top_pos is not None and top_ori is not None:
            normal = np.cross(top_ori[:3], top_ori[3:])
            if offsets is not None and offsets.size == n_frames:
                pos = top_pos + normal * offsets[f]
            elif step:
                pos = top_pos + normal * step * f
        extra = {"thickness": step, "classic_multiframe": True, "geometry": geometry}
        frames.append(
            _Frame(path, ds, f, pos, top_ori, ps, slope, inter, top_window, instance, extra)
        )
    return frames
