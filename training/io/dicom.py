"""DICOM reading: single files, folders and file lists → one :class:`Volume` per series.

* Files are grouped by SeriesInstanceUID; classic single-frame files of a
  series are stacked, multi-frame files (enhanced CT/MR with functional groups,
  classic multi-frame, RT dose) are volumes on their own, DICOM-SEG files are
  read as label maps (through highdicom).
* Slices are ordered by their position along the slice normal
  (ImagePositionPatient · (row_dir x col_dir)); InstanceNumber is used only when
  positions are missing. Spacing comes from the positions (uneven spacing and
  gaps are reported as warnings) and PixelSpacing.
* Stored values go through the modality LUT (RescaleSlope/Intercept or a
  Modality LUT Sequence: HU for CT); MONOCHROME1 is inverted so that bright
  means dense everywhere; palette colour becomes RGB.
* Every per-file problem becomes an :class:`ImageReadError` naming the file.
  Patient identifiers are never put in messages or logs.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.io.errors import ImageReadError, MissingDecoderError
from training.io.volume import Volume, affine_from_geometry, canonical_slice_order

log = logging.getLogger(__name__)

SEG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    }
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Tags kept in layer metadata / used to write results back. The header datasets
# kept for DICOM-SEG export contain patient data: they live only in memory.
_POS_TOL = 1e-3  # mm


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


def looks_like_dicom_file(path: str | os.PathLike) -> bool:
    """Cheap sniff: the 'DICM' magic at byte 128 (files without preamble are not detected)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def check_decoder(ds, path: str) -> None:
    """Raise :class:`MissingDecoderError` if the pixel data needs an unavailable decoder."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise MissingDecoderError(path, f"{ts.name} ({ts})", []) from None
    if not decoder.is_available:
        raise MissingDecoderError(path, ts.name, list(decoder.missing_dependencies))


# ----------------------------------------------------------------------- file reading
def read_dataset(path: str | os.PathLike):
    """Read one DICOM file fully; raise :class:`ImageReadError` with a clear reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = str(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
        for w in caught:
            text = str(w.message)
            if "End of file reached" in text or "truncat" in text.lower():
                raise ImageReadError(path, f"file is truncated ({text.split(' in file ')[0]})")
    except ImageReadError:
        raise
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as e:  # noqa: BLE001 - any parser failure means "not DICOM"
            raise ImageReadError(path, f"not a DICOM file ({type(e).__name__})") from None
        if not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData", "Modality")):
            raise ImageReadError(
                path, "not a DICOM file (no DICOM preamble or known attributes)"
            ) from None
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise ImageReadError(
            path, f"corrupt or truncated DICOM file ({type(e).__name__}: {e})"
        ) from None
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds) -> None:
    """Files without file meta (old ACR-NEMA style): record the encoding they were read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if little in (None, True):
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit in (None, True) else ExplicitVRLittleEndian
        )
    else:
        meta.TransferSyntaxUID = ExplicitVRBigEndian


def _no_pixel_reason(ds) -> str:
    sop_class = str(
        getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
        or ds.get("SOPClassUID", "")
    )
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "is a DICOMDIR index, not an image (open the folder that contains it instead)"
    try:
        from pydicom.uid import UID

        name = UID(sop_class).name if sop_class else "unknown SOP class"
    except Exception:  # noqa: BLE001
        name = sop_class or "unknown SOP class"
    modality = str(ds.get("Modality", "") or "")
    what = f"{name}" + (f", modality {modality}" if modality else "")
    return f"contains no pixel data ({what}); only images can be displayed"


def frames_of(ds, path: str) -> list[_Frame]:
    """Split a dataset into frames with their geometry and value transforms."""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise ImageReadError(path, _no_pixel_reason(ds))
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise ImageReadError(path, "Rows/Columns missing or zero")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    instance = int(_first(ds.get("InstanceNumber")) or 0)
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    top_window = _window_of(ds)
    top_ps = _spacing(ds.get("PixelSpacing"))
    if top_ps is None:
        top_ps = _spacing(ds.get("ImagerPixelSpacing"))
    top_slope = _first(ds.get("RescaleSlope"))
    top_inter = _first(ds.get("RescaleIntercept"))
    if "DoseGridScaling" in ds and top_slope is None:
        top_slope = _first(ds.get("DoseGridScaling"))
    top_pos = _floats(ds.get("ImagePositionPatient"), 3)
    top_ori = _floats(ds.get("ImageOrientationPatient"), 6)

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
            slope = _first(pvt.get("RescaleSlope")) if pvt is not None else None
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
                    _floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else top_ori,
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
        return frames

    slope = 1.0 if top_slope is None else top_slope
    inter = 0.0 if top_inter is None else top_inter
    ps = tuple(top_ps) if top_ps is not None else None
    if n_frames == 1:
        extra = {
            "thickness": _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness"))
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
        extra = {"thickness": step, "classic_multiframe": True}
        frames.append(
            _Frame(path, ds, f, pos, top_ori, ps, slope, inter, top_window, instance, extra)
        )
    return frames


# --------------------------------------------------------------------- pixel decoding
def _decode(ds, path: str) -> np.ndarray:
    check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except MissingDecoderError:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on bad pixel data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "bytes" in msg.lower() and ("less" in msg.lower() or "expected" in msg.lower()):
            reason = f"pixel data is truncated ({msg})"
        else:
            reason = f"cannot decode pixel data ({type(e).__name__}: {msg})"
        raise ImageReadError(path, reason) from None
    return np.asarray(arr)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _to_values(raw: np.ndarray, frames: Sequence[_Frame], ds, path: str) -> tuple[np.ndarray, dict]:
    """Apply modality LUT / rescale, MONOCHROME1 inversion and palette colour.

    ``raw`` is (n_frames, rows, cols[, samples]). Returns the value array and
    info (``rgb``, ``inverted`` range).
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "").upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    info: dict[str, Any] = {"rgb": False, "invert": None}
    if samples > 1 or raw.ndim == 4:
        info["rgb"] = True
        return raw, info
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            out = apply_color_lut(raw, ds)
        except Exception as e:  # noqa: BLE001
            raise ImageReadError(
                path, f"cannot apply the palette colour LUT ({type(e).__name__}: {e})"
            ) from None
        info["rgb"] = True
        return out, info
    if raw.dtype.kind == "f":  # float pixel data: already real values
        out = raw.astype(np.float32, copy=False)
    elif "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        out = apply_modality_lut(raw, ds)
    else:
        slopes = np.array([fr.slope for fr in frames], dtype=np.float64)
        inters = np.array([fr.intercept for fr in frames], dtype=np.float64)
        if np.all(slopes == 1.0) and np.all(inters == 0.0):
            out = raw
        else:
            lo, hi = float(raw.min()), float(raw.max())
            ends = np.stack([lo * slopes + inters, hi * slopes + inters])
            integral = np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters))
            if integral and ends.min() >= -32768 and ends.max() <= 32767:
                dtype = np.int16
            elif integral and ends.min() >= -(2**31) and ends.max() < 2**31:
                dtype = np.int32
            else:
                dtype = np.float32
            if np.all(slopes == slopes[0]) and np.all(inters == inters[0]):
                out = raw.astype(np.float64 if dtype == np.float32 else dtype)
                if slopes[0] != 1.0:
                    out *= dtype(slopes[0]) if dtype != np.float32 else slopes[0]
                if inters[0] != 0.0:
                    out += dtype(inters[0]) if dtype != np.float32 else inters[0]
                out = out.astype(dtype, copy=False)
            else:
                out = (
                    raw.astype(np.float64) * slopes[:, None, None] + inters[:, None, None]
                ).astype(dtype)
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(ds)
        s, b = frames[0].slope, frames[0].intercept
        vlo, vhi = sorted((lo * s + b, hi * s + b))
        if out.dtype.kind in "iu":
            out = np.int64(vlo + vhi) - out.astype(np.int64)
            out = out.astype(np.int32 if out.min() < -32768 or out.max() > 32767 else np.int16)
        else:
            out = (vlo + vhi) - out
        info["invert"] = (vlo, vhi)
    return out, info


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
    array = values
    if array.shape[0] == 1 and not info["rgb"]:
        array = array[0]
    elif array.shape[0] == 1 and info["rgb"]:
        array = array[0]
    modality = str(ds0.get("Modality", "OT") or "OT")
    meta = _metadata(frames, ds0, affine, dist, warnings, info)
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
    if dist is not None:
        meta["slice_positions"] = [float(d) for d in dist]
    if multi:
        meta["frame_order"] = [
            int(f.frame) for f in frames
        ]  # display slice k is source frame frame_order[k]
        meta["dicom_headers"] = [_header_copy(ds0)]
    else:
        meta["dicom_headers"] = [_header_copy(f.ds) for f in frames]
    return meta


# -------------------------------------------------------------------------- DICOM-SEG
def _read_seg(ds, path: str) -> Volume:
    try:
        import highdicom as hd

        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(path, f"cannot read DICOM-SEG ({type(e).__name__}: {e})") from None
    arr = np.asarray(vol.array)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    affine = np.asarray(vol.affine, dtype=np.float64)
    arr, affine, _ = canonical_slice_order(arr, affine)
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


# ------------------------------------------------------------------------- public API
def read_dicom(
    paths: Iterable[str | os.PathLike],
    on_skip: Callable[[ImageReadError], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[Volume]:
    """Read DICOM files (any mix of series) into one volume per series/stack.

    Files that cannot be used are passed to ``on_skip(error)``; if
    ``on_skip`` is None, the first problem raises :class:`ImageReadError`.
    Raises :class:`ImageReadError` if nothing at all could be read.
    """
    paths = [str(p) for p in paths]
    skipped: list[ImageReadError] = []

    def skip(path: str | ImageReadError, reason: str = ""):
        err = path if isinstance(path, ImageReadError) else ImageReadError(path, reason)
        log.warning("Skipped DICOM file %s: %s", err.path, err.reason)
        skipped.append(err)
        if on_skip is None:
            raise err
        on_skip(err)

    def warn(msg: str):
        log.warning("%s", msg)
        if on_warning is not None:
            on_warning(msg)

    decoded: dict[str, np.ndarray] = {}
    seg_volumes: list[Volume] = []
    by_series: dict[str, list[_Frame]] = defaultdict(list)
    multi_frame_files: list[list[_Frame]] = []
    for p in paths:
        try:
            ds = read_dataset(p)
            if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES and "PixelData" in ds:
                seg_volumes.append(_read_seg(ds, p))
                continue
            frames = frames_of(ds, p)
            decoded[p] = _decode(ds, p)
            n = len(frames)
            arr = decoded[p]
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            expect = (n,) if n > 1 else ()
            expect += (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
            if arr.shape != expect:
                raise ImageReadError(
                    p, f"decoded pixel array has shape {arr.shape}, expected {expect}"
                )
        except ImageReadError as e:
            decoded.pop(p, None)
            skip(e)
            continue
        except Exception as e:  # noqa: BLE001 - malformed attribute values (e.g. bad VRs)
            decoded.pop(p, None)
            skip(p, f"invalid or unsupported DICOM content ({type(e).__name__}: {e})")
            continue
        if n > 1 or frames[0].frame is not None:
            multi_frame_files.append(frames)
        else:
            by_series[
                str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{Path(p).parent}")
            ].append(frames[0])

    volumes: list[Volume] = []
    for frames in multi_frame_files:
        w: list[str] = []
        try:
            # majority orientation if frames disagree (multi-plane localizers)
            keys = Counter(_orientation_key(f) for f in frames)
            if len(keys) > 1:
                best = keys.most_common(1)[0][0]
                w.append(
                    f"{frames[0].path}: frames have {len(keys)} orientations; showing the "
                    f"{keys[best]} frame(s) of the most common one"
                )
                frames = [f for f in frames if _orientation_key(f) == best]
            volumes.append(_volume_from_frames(frames, frames[0].path, skip, w, decoded))
        except ImageReadError as e:
            skip(e)
        except Exception as e:  # noqa: BLE001 - never let odd geometry escape unexplained
            skip(frames[0].path, f"cannot assemble frames ({type(e).__name__}: {e})")
        for m in w:
            warn(m)

    for _uid, frames in by_series.items():
        # mixed shapes: keep the most common pixel shape, report the others
        shapes = Counter(_pixel_shape(f.ds) for f in frames)
        if len(shapes) > 1:
            best, count = shapes.most_common(1)[0]
            for f in frames:
                shp = _pixel_shape(f.ds)
                if shp != best:
                    skip(
                        f.path,
                        f"image size {shp[0]}x{shp[1]} (x{shp[2]} samples) differs from the "
                        f"rest of its series ({best[0]}x{best[1]}, {count} files)",
                    )
            frames = [f for f in frames if _pixel_shape(f.ds) == best]
        groups: dict[Any, list[_Frame]] = defaultdict(list)
        for f in frames:
            groups[_orientation_key(f)].append(f)
        for gi, (_key, gframes) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
            w = []
            number = gframes[0].ds.get("SeriesNumber", "?")
            where = f"series {number} ({Path(gframes[0].path).parent.name})"
            try:
                vol = _volume_from_frames(gframes, where, skip, w, decoded)
            except ImageReadError as e:
                skip(e)
                continue
            except Exception as e:  # noqa: BLE001
                for f in gframes:
                    skip(f.path, f"cannot assemble series ({type(e).__name__}: {e})")
                continue
            if len(groups) > 1:
                vol.name += f" [orientation {gi + 1}]"
            volumes.append(vol)
            for m in w:
                warn(m)
    volumes.extend(seg_volumes)
    # unique layer names
    seen: Counter = Counter()
    for v in volumes:
        seen[v.name] += 1
        if seen[v.name] > 1:
            v.name = f"{v.name} ({seen[v.name]})"
    if not volumes:
        if len(paths) == 1 and skipped:
            raise skipped[0]
        raise ImageReadError(
            paths[0] if len(paths) == 1 else os.path.commonpath(paths) if paths else "<no files>",
            f"no readable DICOM image among {len(paths)} file(s)"
            + (f"; e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""),
        )
    return volumes
