"""Per-class tables of a label map: statistics (voxels, volume, intensity inside) and CSV.

Qt-free; the napari segment table (:mod:`napari_vismae._segment_table`) drives it from a
worker thread. :func:`segment_statistics_steps` is a generator that yields after each class
so that a newer request can stop a stale computation between classes.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from training.runtime.atomic import atomic_write_text


@dataclass
class ClassStats:
    """One row of a segment table. Intensities are ``nan`` without an image (or an empty class)."""

    index: int
    name: str
    voxels: int
    volume_ml: float  # voxels x voxel volume (mm³) / 1000; for a 2-D map: area in cm²
    mean: float = math.nan
    std: float = math.nan
    min: float = math.nan
    max: float = math.nan
    largest_slice: int | None = None  # index along the first axis with the most voxels (3-D)


def segment_statistics_steps(labels: np.ndarray, classes: Sequence[int] | None = None,
                             names: dict[int, str] | None = None,
                             spacing: Sequence[float] | None = None,
                             image: np.ndarray | None = None) -> Iterator[ClassStats]:
    """Yield a :class:`ClassStats` per class (background 0 excluded).

    ``classes``: indices always reported (a listed class that is absent gets a row with 0
    voxels); every other non-zero value present in ``labels`` gets a row too. ``spacing``:
    voxel size in mm per axis of ``labels`` (default 1). ``image``: intensities on the same
    grid (e.g. HU), or None.
    """
    lab = np.asarray(labels)
    if image is not None:
        image = np.asarray(image)
        if image.shape != lab.shape:
            raise ValueError(f"image shape {image.shape} differs from labels shape {lab.shape}")
    classes = sorted({int(c) for c in (classes or ()) if int(c) != 0} | set(present_classes(lab)))
    names = names or {}
    sp = np.ones(lab.ndim) if spacing is None else np.asarray(spacing, float)[-lab.ndim:]
    unit = float(np.prod(sp)) / (1000.0 if lab.ndim >= 3 else 100.0)  # mL, or cm² in 2-D
    for c in classes:
        c = int(c)
        mask = lab == c
        if lab.ndim >= 3:
            per_slice = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
            n = int(per_slice.sum())
            largest = int(np.argmax(per_slice)) if n else None
        else:
            n, largest = int(np.count_nonzero(mask)), None
        row = ClassStats(c, names.get(c, f"class {c}"), n, n * unit, largest_slice=largest)
        if image is not None and n:
            vals = image[mask].astype(np.float64, copy=False)
            row.mean, row.std = float(vals.mean()), float(vals.std())
            row.min, row.max = float(vals.min()), float(vals.max())
        yield row


def present_classes(labels: np.ndarray) -> list[int]:
    """The non-zero values of ``labels`` (bincount for small unsigned types: no sort)."""
    lab = np.asarray(labels)
    if lab.dtype.kind == "u" and lab.dtype.itemsize <= 2 or lab.dtype == np.bool_:
        flat = lab.reshape(-1)
        counts = np.zeros(1 << (8 * lab.dtype.itemsize), np.int64)
        step = 1 << 22  # chunks: bincount casts to intp, keep that copy small
        for start in range(0, flat.size, step):
            c = np.bincount(flat[start:start + step])
            counts[: c.size] += c
        return [int(c) for c in np.flatnonzero(counts) if c != 0]
    return [int(c) for c in np.unique(lab) if c != 0]


def segment_statistics(*args, **kwargs) -> list[ClassStats]:
    """All rows of :func:`segment_statistics_steps` at once."""
    return list(segment_statistics_steps(*args, **kwargs))


def table_csv(rows: Iterable[ClassStats], units: str = "", two_d: bool = False) -> str:
    """The rows as CSV text; ``units`` (e.g. ``"HU"``) is appended to the intensity headers."""
    cols = [f.name for f in fields(ClassStats)]
    header = {"volume_ml": "area_cm2" if two_d else "volume_ml"}
    for k in ("mean", "std", "min", "max"):
        header[k] = f"{k}_{units}" if units else k
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([header.get(c, c) for c in cols])
    for r in rows:
        d = asdict(r)
        w.writerow(["" if (isinstance(d[c], float) and math.isnan(d[c])) or d[c] is None
                    else (f"{d[c]:.6g}" if isinstance(d[c], float) else d[c]) for c in cols])
    return buf.getvalue()


def write_table_csv(path: str | os.PathLike, rows: Iterable[ClassStats], units: str = "",
                    two_d: bool = False) -> None:
    """Write :func:`table_csv` atomically to ``path``."""
    atomic_write_text(path, table_csv(rows, units, two_d))
