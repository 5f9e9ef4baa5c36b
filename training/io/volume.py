"""The :class:`Volume` container shared by every reader and writer.

Conventions
-----------
* ``array`` holds the spatial axes last, in *index order* ``(slice, row, column)``
  = ``(z, y, x)``; 2-D images are ``(y, x)``; 4-D data (time series, several
  phases) are ``(t, z, y, x)``. RGB(A) images add a trailing channel axis and
  have ``rgb=True``.
* ``affine`` is a 4x4 matrix mapping the homogeneous index ``(k, j, i, 1)`` =
  ``(slice, row, column, 1)`` of the three spatial axes to **patient coordinates
  in millimetres, DICOM LPS** (x towards the patient's left, y towards
  posterior, z towards head), as ``(x, y, z, 1)``. This is the DICOM / ITK /
  highdicom convention; the NIfTI (RAS) affine is ``diag(-1, -1, 1, 1) @ affine``
  with the index axes reversed. 2-D images use ``k = 0``.
* Readers return arrays in the *radiological display layout* of the acquisition plane
  (:func:`canonical_layout`), whatever the file's row/column directions: the slice axis
  stays the acquisition's slice normal, rows and columns are flipped/swapped so that

  ========  =====================  =====================  ======================
  plane     slices (axis -3)       rows (top → bottom)    columns (left → right)
  ========  =====================  =====================  ======================
  axial     inferior → superior    anterior → posterior   patient right → left
  coronal   anterior → posterior   superior → inferior    patient right → left
  sagittal  patient left → right   superior → inferior    anterior → posterior
  ========  =====================  =====================  ======================

  (the standard DICOM orientations of each plane; the ``(column, row, slice)`` frame is
  right-handed). Only permutations and flips are used, never resampling: an oblique
  acquisition is put on the *nearest* canonical axes, its affine stays exact, and
  ``metadata["orientation"]`` says how far from the patient axes it is
  (``oblique_deg``). ``metadata["orientation"]`` also keeps the source affine, shape and
  the transform so writers put labels back on the file's own voxel grid
  (:func:`to_source_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str = "OT"
    window: tuple[float, float] | None = None  # (center, width) from the header, if any
    name: str = "image"
    rgb: bool = False
    kind: str = "image"  # "image" or "labels"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    # -- geometry -----------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = self.array.shape[:-1] if self.rgb else self.array.shape
        return tuple(shape[-3:]) if len(shape) >= 3 else tuple(shape)

    @property
    def spatial_ndim(self) -> int:
        return len(self.spatial_shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(slice, row, column)``."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel ``(0, 0, 0)``."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit LPS directions of (slice, row, column)."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    def index_to_lps(self, index) -> np.ndarray:
        """LPS mm of spatial index ``(k, j, i)`` (or ``(j, i)`` for 2-D images)."""
        idx = np.asarray(index, dtype=np.float64)
        if idx.shape[-1] == 2:
            idx = np.concatenate([np.zeros(idx.shape[:-1] + (1,)), idx], axis=-1)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def display_scale_translate(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``scale`` and ``translate`` for a viewer that shows the array on its own grid.

        The world frame is the volume's own (slice, row, column) frame in mm,
        positioned so that volumes sharing an orientation (e.g. a series and a
        segmentation of it, or several series of one study) line up. Leading
        non-spatial axes (time) get scale 1, translate 0.
        """
        sp = np.asarray(self.spacing)
        units = self.direction
        frame_origin = units.T @ self.affine[:3, 3]
        n_lead = (self.array.ndim - (1 if self.rgb else 0)) - self.spatial_ndim
        if self.spatial_ndim == 2:
            sp, frame_origin = sp[1:], frame_origin[1:]
        scale = (1.0,) * n_lead + tuple(float(v) for v in sp)
        translate = (0.0,) * n_lead + tuple(float(v) for v in frame_origin)
        return scale, translate


def affine_from_geometry(origin, row_dir, col_dir, slice_step, pixel_spacing) -> np.ndarray:
    """Build the (slice, row, column) → LPS affine.

    ``row_dir``/``col_dir`` are the first/second triplets of DICOM
    ImageOrientationPatient (direction of increasing column index / row index),
    ``pixel_spacing`` is DICOM PixelSpacing ``(between rows, between columns)``,
    ``slice_step`` the LPS vector from one slice to the next.
    """
    aff = np.eye(4)
    aff[:3, 0] = np.asarray(slice_step, float)
    aff[:3, 1] = np.asarray(col_dir, float) * float(pixel_spacing[0])
    aff[:3, 2] = np.asarray(row_dir, float) * float(pixel_spacing[1])
    aff[:3, 3] = np.asarray(origin, float)
    return aff


def canonical_slice_order(array: np.ndarray, affine: np.ndarray, n_trailing: int = 0):
    """Flip the slice axis if needed so that it runs along ``row_dir x col_dir``.

    ``n_trailing`` is the number of channel axes after the spatial ones.
    Returns ``(array, affine, flipped)``.
    """
    aff = np.asarray(affine, float)
    normal = np.cross(aff[:3, 2], aff[:3, 1])
    if np.dot(normal, aff[:3, 0]) >= 0:
        return array, aff, False
    axis = array.ndim - 3 - n_trailing
    n = array.shape[axis]
    flipped = np.flip(array, axis=axis)
    new = aff.copy()
    new[:3, 3] = aff[:3, 3] + (n - 1) * aff[:3, 0]
    new[:3, 0] = -aff[:3, 0]
    return flipped, new, True


# ------------------------------------------------------------------ display orientation
#: plane (world axis of the slice normal, LPS 0=x 1=y 2=z) → (world axis, sign) of the
#: displayed (slice, row, column) axes; see the module doc.
_PLANES = {
    2: ("axial", ((2, 1), (1, 1), (0, 1))),
    1: ("coronal", ((1, 1), (2, -1), (0, 1))),
    0: ("sagittal", ((0, -1), (2, -1), (1, 1))),
}
_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # LPS axis → (negative, positive) letter


def _nearest_axes(direction: np.ndarray) -> list[tuple[int, int]]:
    """(world axis, sign) nearest to each column of a 3x3 direction matrix; a permutation
    (the largest cosines are taken first, as nibabel's io_orientation does)."""
    d = np.abs(np.asarray(direction, float))
    out: list[tuple[int, int] | None] = [None] * 3
    used_w: set[int] = set()
    for flat in np.argsort(-d, axis=None):
        w, a = divmod(int(flat), 3)
        if out[a] is None and w not in used_w:
            out[a] = (w, 1 if direction[w, a] >= 0 else -1)
            used_w.add(w)
    return out  # type: ignore[return-value]


def letter(vec) -> str:
    """The patient direction letter (R/L/A/P/I/S) nearest to an LPS vector."""
    v = np.asarray(vec, float)
    w = int(np.argmax(np.abs(v)))
    return _LETTERS[w][1 if v[w] >= 0 else 0]


def canonical_layout(array: np.ndarray, affine: np.ndarray, n_trailing: int = 0):
    """Flip/permute the three spatial axes (the last three before ``n_trailing`` channel
    axes) into the radiological display layout of the acquisition plane (module doc).

    Returns ``(array, affine, info)``; ``info`` (for ``metadata["orientation"]``) holds
    ``plane``, ``transform`` (for each output axis: ``[source axis, flipped]``),
    ``source_affine``, ``source_shape``, ``oblique_deg`` and a human-readable ``note``.
    """
    aff = np.asarray(affine, float)
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    sp[sp == 0] = 1.0
    direction = aff[:3, :3] / sp
    nearest = _nearest_axes(direction)
    plane, targets = _PLANES[nearest[0][0]]
    ax0 = array.ndim - 3 - n_trailing
    src_shape = tuple(int(s) for s in array.shape[ax0 : ax0 + 3])
    perm, flips = [], []
    for w, sign in targets:
        src = next(a for a in range(3) if nearest[a][0] == w)
        perm.append(src)
        flips.append(nearest[src][1] != sign)
    new = np.eye(4)
    new[:3, 3] = aff[:3, 3]
    for o, (src, fl) in enumerate(zip(perm, flips, strict=True)):
        col = aff[:3, src]
        if fl:
            new[:3, 3] += (src_shape[src] - 1) * col
            col = -col
        new[:3, o] = col
    axes = list(range(array.ndim))
    axes[ax0 : ax0 + 3] = [ax0 + p for p in perm]
    out = np.transpose(array, axes)
    flip_axes = tuple(ax0 + o for o, fl in enumerate(flips) if fl)
    if flip_axes:
        out = np.flip(out, axis=flip_axes)
    cosines = [abs(direction[w, a]) for a, (w, _) in enumerate(nearest)]
    oblique = float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))
    changed = perm != [0, 1, 2] or any(flips)
    note = (f"{plane}; shown as stored" if not changed else
            f"{plane}; flipped/permuted from the file's layout for display")
    if oblique > 0.5:
        note += (f"; oblique by up to {oblique:.1f}°: shown on the nearest patient axes "
                 "(flip/permute only, not resampled), so the edge letters are approximate")
    info = {
        "plane": plane,
        "transform": [[int(p), bool(f)] for p, f in zip(perm, flips, strict=True)],
        "source_affine": aff.copy(),
        "source_shape": src_shape,
        "oblique_deg": round(oblique, 3),
        "note": note,
    }
    return (np.ascontiguousarray(out) if changed else array), new, info


def to_source_grid(array: np.ndarray, info: dict | None) -> np.ndarray:
    """Undo :func:`canonical_layout` on a spatial ``(z, y, x)`` (or 2-D ``(y, x)``, one
    slice) array: the result is on the file's own voxel grid, ``info["source_shape"]``."""
    a = np.asarray(array)
    if not info:
        return a
    two_d = a.ndim == 2
    if two_d:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"labels must be 2-D or 3-D, got shape {np.shape(array)}")
    perm = [int(p) for p, _ in info["transform"]]
    flips = tuple(o for o, (_, f) in enumerate(info["transform"]) if f)
    expected = tuple(int(info["source_shape"][p]) for p in perm)
    if a.shape != expected:
        raise ValueError(f"labels of shape {np.shape(array)} do not match the image "
                         f"({expected[0]} slices of {expected[1]}x{expected[2]})")
    if flips:
        a = np.flip(a, axis=flips)
    a = np.ascontiguousarray(np.transpose(a, np.argsort(perm)))
    if two_d and a.shape[0] == 1:
        a = a[0]
    return a


def edge_letters(affine: np.ndarray, axes: tuple[int, int] = (1, 2)) -> dict[str, str]:
    """Letters for the canvas edges when spatial axes ``axes`` = (vertical, horizontal)
    of a (slice, row, column) → LPS ``affine`` are displayed (rows grow downwards)."""
    aff = np.asarray(affine, float)
    v, h = aff[:3, axes[0]], aff[:3, axes[1]]
    return {"top": letter(-v), "bottom": letter(v), "left": letter(-h), "right": letter(h)}
