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


# ------------------------------------------------------------- ITK-SNAP label description
#: The label table written beside a NIfTI label map: ``<name>.label.txt`` for ``<name>.nii.gz``.
#: Format: ITK-SNAP's label description file (Segmentation > Import Label Descriptions in
#: ITK-SNAP; also read by MITK, and by 3D Slicer's and nnU-Net's conversion scripts).
SIDECAR_SUFFIX = ".label.txt"
MAX_TABLE_BYTES = 4 << 20  # a label table is a few kB; a larger file is not one

_ITKSNAP_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""


def label_sidecar_path(nifti_path: str | os.PathLike) -> str:
    """``x.nii.gz`` / ``x.nii`` → ``x.label.txt`` (same folder)."""
    p = os.fspath(nifti_path)
    for ext in (".nii.gz", ".nii"):
        if p.lower().endswith(ext):
            return p[: -len(ext)] + SIDECAR_SUFFIX
    return p + SIDECAR_SUFFIX


def _rgb255(color) -> tuple[int, int, int, float]:
    c = np.asarray(color, float).ravel()
    alpha = float(c[3]) if c.size > 3 else 1.0
    rgb = c[:3]
    if alpha <= 1.0 and rgb.max(initial=0) <= 1.0:
        rgb = rgb * 255.0
    elif alpha > 1.0:  # 0-255 RGBA
        alpha /= 255.0
    r, g, b = (int(v) for v in np.clip(np.round(rgb), 0, 255))
    return r, g, b, min(max(alpha, 0.0), 1.0)


def itksnap_label_text(names: dict[int, str], colors: dict[int, Sequence[float]]) -> str:
    """ITK-SNAP label description text; colours as RGB(A) in 0-1 or 0-255."""
    lines = [_ITKSNAP_HEADER.rstrip("\n"),
             f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8.2f} {0:2d} {0:2d}    "Clear Label"']
    for idx in sorted({int(k) for k in names} | {int(k) for k in colors}):
        if idx == 0:
            continue
        r, g, b, a = _rgb255(colors.get(idx, (0.5, 0.5, 0.5)))
        name = str(names.get(idx, f"Label {idx}")).replace('"', "'").replace("\n", " ")
        lines.append(f'{idx:5d} {r:5d} {g:4d} {b:4d} {a:8.2f} {1:2d} {1:2d}    "{name}"')
    return "\n".join(lines) + "\n"


def write_itksnap_labels(path: str | os.PathLike, names: dict[int, str],
                         colors: dict[int, Sequence[float]]) -> None:
    """Write an ITK-SNAP label description file atomically."""
    atomic_write_text(path, itksnap_label_text(names, colors))


def read_itksnap_labels(path: str | os.PathLike) -> tuple[dict[int, str],
                                                          dict[int, tuple[float, ...]]]:
    """Read an ITK-SNAP label description file → ``(names, colors)``, colours RGBA in 0-1.

    Index 0 ("Clear Label") is left out. A malformed line raises ValueError naming it.
    """
    import shlex

    names: dict[int, str] = {}
    colors: dict[int, tuple[float, ...]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                parts = shlex.split(line)
                idx, r, g, b = (int(v) for v in parts[:4])
                alpha = float(parts[4])
                label = " ".join(parts[7:]) if len(parts) > 7 else f"Label {idx}"
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {n}: not an ITK-SNAP label line: {line!r}") \
                    from None
            if idx == 0:
                continue
            names[idx] = label
            colors[idx] = (r / 255.0, g / 255.0, b / 255.0, alpha)
    return names, colors


def attach_label_table(vol, nifti_path: str | os.PathLike):
    """If ``<name>.label.txt`` lies beside ``nifti_path``, put its names and colours in
    ``vol.metadata`` (``label_names``, ``label_colors``) and mark the volume as labels.

    An unreadable table is reported in ``vol.metadata["warnings"]``, never fatal.
    Returns ``vol``.
    """
    side = label_sidecar_path(nifti_path)
    if not os.path.isfile(side):
        return vol
    try:
        if os.path.getsize(side) > MAX_TABLE_BYTES:
            raise ValueError(f"{side} is larger than {MAX_TABLE_BYTES} bytes")
        names, colors = read_itksnap_labels(side)
    except (OSError, ValueError) as e:
        vol.metadata.setdefault("warnings", []).append(f"label table ignored: {e}")
        return vol
    a = vol.array
    if vol.kind != "labels" and not vol.rgb and (
            a.dtype.kind in "iub" or (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0))):
        vol.kind = "labels"
        if a.dtype.kind == "f":
            vol.array = a.astype(np.uint16 if a.max(initial=0) < 2**16 else np.uint32)
    vol.metadata["label_names"] = names
    vol.metadata["label_colors"] = colors
    vol.metadata["label_table"] = side
    return vol
