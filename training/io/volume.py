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
* Readers return arrays laid out for *radiological display*: for an axial
  acquisition, rows run anterior → posterior, columns run right → left of the
  patient (the patient's right on the viewer's left), slices run inferior →
  superior. The slice direction is always ``row_dir x col_dir`` so that the
  ``(column, row, slice)`` = ``(i, j, k)`` frame is right-handed.
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
