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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from training.io.dicom_files import (  # noqa: F401 - public names re-exported
    DICOMDIR_SOP_CLASS,
    PIXEL_KEYWORDS,
    SEG_SOP_CLASSES,
    check_pixel_budget,
    looks_like_dicom_file,
    read_dataset,
)
from training.io.dicom_frames import _Frame, frames_of
from training.io.dicom_pixels import _decode, check_decoder  # noqa: F401
from training.io.dicom_seg import _read_seg
from training.io.dicom_stack import _orientation_key, _pixel_shape, _volume_from_frames
from training.io.errors import ImageReadError
from training.io.volume import Volume

log = logging.getLogger(__name__)


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
                check_pixel_budget(ds, p)  # before highdicom decodes any frame
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
            # every attribute grouping needs is decoded here, inside the guard: pydicom
            # converts values lazily and a damaged one raises on first access
            series = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{Path(p).parent}")
            for keyword in ("SeriesNumber", "SeriesDescription", "Modality"):
                ds.get(keyword)
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
            by_series[series].append(frames[0])

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
