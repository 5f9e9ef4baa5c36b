"""DICOM frames → one :class:`Volume`: slice ordering along the normal, spacing, affine,
window and layer metadata."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.io.dicom_files import PIXEL_KEYWORDS
from training.io.dicom_frames import _Frame, _safe_name
from training.io.dicom_pixels import _to_values
from training.io.limits import check_declared_size
from training.io.volume import Volume, affine_from_geometry, canonical_layout

_POS_TOL = 1e-3  # mm


# ------------------------------------------------------------------------ stacking
def _orientation_key(fr: _Frame):
    if fr.orientation is None:
        return None
    return tuple(np.round(fr.orientation, 3))


def _pixel_shape(ds) -> tuple:
    return (int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1))


def _order_frames(frames: list[_Frame], where: str, warnings: list[str]):
    """Sort frames along the slice normal.

    Returns (frames, positions along the normal or None, dropped duplicates).
    """
    dropped: list[_Frame] = []
    if len(frames) == 1:
        return frames, None, dropped
    have_geometry = all(f.position is not None and f.orientation is not None for f in frames)
    if not have_geometry:
        frames = sorted(
            frames, key=lambda f: (f.instance, f.frame if f.frame is not None else 0, f.path)
        )
        if (
            any(f.position is None for f in frames)
            and frames[0].extra.get("classic_multiframe") is None
        ):
            warnings.append(f"{where}: no ImagePositionPatient; slices ordered by InstanceNumber")
        return frames, None, dropped
    ori = frames[0].orientation
    normal = np.cross(ori[:3], ori[3:])
    dist = np.array([float(np.dot(f.position, normal)) for f in frames])
    order = np.lexsort(
        (
            np.array([f.instance for f in frames]),
            np.array([f.frame if f.frame is not None else 0 for f in frames]),
            dist,
        )
    )
    frames = [frames[i] for i in order]
    dist = dist[order]
    keep = [0]
    for i in range(1, len(frames)):
        if abs(dist[i] - dist[keep[-1]]) < _POS_TOL:
            dropped.append(frames[i])
        else:
            keep.append(i)
    frames = [frames[i] for i in keep]
    return frames, dist[keep], dropped


def _slice_step(frames: list[_Frame], dist, where: str, warnings: list[str]) -> np.ndarray:
    ori = frames[0].orientation
    if ori is None:
        ori = np.array([1.0, 0, 0, 0, 1.0, 0])
    normal = np.cross(ori[:3], ori[3:])
    nrm = np.linalg.norm(normal)
    normal = normal / nrm if nrm > 0 else np.array([0.0, 0.0, 1.0])
    if dist is None or len(frames) < 2:
        thick = frames[0].extra.get("thickness") or 1.0
        return normal * float(thick)
    diffs = np.diff(dist)
    med = float(np.median(diffs))
    step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
    if np.ptp(diffs) > max(1e-2 * med, 1e-3):
        gaps = int(np.sum(diffs > 1.5 * med))
        msg = (
            f"{where}: uneven slice spacing ({diffs.min():.3g}–{diffs.max():.3g} mm, "
            f"median {med:.3g} mm)"
        )
        if gaps:
            msg += f"; {gaps} gap(s) (missing slices?)"
        msg += "; the volume assumes the median spacing"
        warnings.append(msg)
        # a regular grid along the mean step direction whose normal spacing is the median
        unit = step / np.linalg.norm(step)
        step = unit * med / float(np.dot(unit, normal))
    if np.linalg.norm(np.cross(step / np.linalg.norm(step), normal)) > 1e-3:
        warnings.append(
            f"{where}: slices are not stacked along their normal (gantry tilt?); "
            "the affine is sheared"
        )
    return step


def _volume_from_frames(
    frames: list[_Frame],
    group_name: str,
    report_skip: Callable[[str, str], None],
    warnings: list[str],
    decoded: dict,
) -> Volume:
    where = group_name
    for fr in frames:
        for note in fr.extra.get("geometry", ()):
            msg = f"{where}: {note}"
            if msg not in warnings:
                warnings.append(msg)
    frames, dist, dropped = _order_frames(frames, where, warnings)
    for d in dropped:
        if d.frame is None:
            report_skip(
                d.path,
                "duplicate slice position in its series (another echo/phase/acquisition?); "
                "kept the first one",
            )
    if dropped and frames[0].frame is not None:
        # several temporal positions / stacks in one multi-frame file
        warnings.append(
            f"{where}: {len(dropped)} frame(s) share a position with another frame; "
            "only the first frame at each position is shown"
        )
    ds0 = frames[0].ds
    # pixels
    raws = []
    for fr in frames:
        arr = decoded[fr.path]
        raws.append(arr if fr.frame is None else arr[fr.frame])
    if len(raws) > 1:  # a series of small files can still add up past the ceiling
        check_declared_size(frames[0].path, (len(raws), *raws[0].shape), raws[0].itemsize,
                            what=f"the series ({len(raws)} slices)")
    raw = np.stack(raws) if len(raws) > 1 else raws[0][None]
    values, info = _to_values(raw, frames, ds0, frames[0].path)
    # geometry
    ori = frames[0].orientation
    row_dir, col_dir = (
        (ori[:3], ori[3:]) if ori is not None else (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    )
    ps = frames[0].pixel_spacing or (1.0, 1.0)
    if frames[0].pixel_spacing is None:
        warnings.append(f"{where}: no PixelSpacing; assuming 1 mm pixels")
    origin = frames[0].position if frames[0].position is not None else np.zeros(3)
    step = _slice_step(frames, dist, where, warnings)
    affine = affine_from_geometry(origin, row_dir, col_dir, step, ps)
    # window (MONOCHROME1 inverts it too)
    window = frames[len(frames) // 2].window or frames[0].window
    if window is not None and info["invert"] is not None:
        vlo, vhi = info["invert"]
        window = (vlo + vhi - window[0], window[1])
    # radiological display layout (anterior up, patient right on the left...); the source
    # grid (the slices sorted along the normal, as in dicom_headers) stays in orientation
    array, affine, orientation = canonical_layout(values, affine, 1 if info["rgb"] else 0)
    if orientation["oblique_deg"] > 0.5:
        warnings.append(f"{where}: {orientation['note']}")
    if array.shape[0] == 1:
        array = array[0]
    modality = str(ds0.get("Modality", "OT") or "OT")
    meta = _metadata(frames, ds0, affine, dist, warnings, info)
    meta["orientation"] = orientation
    return Volume(
        array=array,
        affine=affine,
        modality=modality,
        window=window,
        name=_safe_name(ds0, Path(frames[0].path).stem),
        rgb=info["rgb"],
        kind="image",
        metadata=meta,
    )


def _header_copy(ds):
    """The dataset without its pixel data (already decoded; dropped to save memory)."""
    for k in PIXEL_KEYWORDS:
        if k in ds:
            del ds[k]
    return ds


def _metadata(frames, ds0, affine, dist, warnings, info) -> dict:
    multi = frames[0].frame is not None
    meta: dict[str, Any] = {
        "source_kind": "dicom",
        "files": [f.path for f in frames] if not multi else [frames[0].path],
        "study_uid": str(ds0.get("StudyInstanceUID", "")),
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "frame_of_reference_uid": str(ds0.get("FrameOfReferenceUID", "")),
        "sop_class_uid": str(ds0.get("SOPClassUID", "")),
        "sop_instance_uids": (
            [str(f.ds.get("SOPInstanceUID", "")) for f in frames]
            if not multi
            else [str(ds0.get("SOPInstanceUID", ""))]
        ),
        "modality": str(ds0.get("Modality", "") or ""),
        "series_description": str(ds0.get("SeriesDescription", "") or ""),
        "series_number": ds0.get("SeriesNumber"),
        "affine": affine,
        "units": "HU" if str(ds0.get("Modality", "")).upper() == "CT" and not info["rgb"] else "",
        "photometric_interpretation": str(ds0.get("PhotometricInterpretation", "") or ""),
        "warnings": list(warnings),
    }
    if dist is not None:  # along the normal, source (sorted) slice order
        meta["slice_positions"] = [float(d) for d in dist]
    if multi:
        # source-grid slice k (before the display reorientation) is frame frame_order[k]
        meta["frame_order"] = [int(f.frame) for f in frames]
        meta["dicom_headers"] = [_header_copy(ds0)]
    else:
        meta["dicom_headers"] = [_header_copy(f.ds) for f in frames]
    return meta
