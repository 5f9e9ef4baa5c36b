"""npe2 reader: DICOM files/folders, DICOM-SEG, NIfTI and 2-D images via :mod:`training.io`.

Layers are placed in millimetres: ``scale`` is the voxel size and ``translate`` the
position of the first voxel in the volume's own (slice, row, column) frame, so that
series sharing an orientation line up. The arrays come in the radiological display
layout of their plane (:mod:`training.io.volume`: axial anterior up, patient right on
the left), and the viewer gets orientation letters on the canvas edges
(:mod:`napari_vismae._orientation`); ``metadata["orientation"]`` says what was flipped
or swapped (and how oblique the acquisition is). The true (slice, row, column) → LPS affine
is kept in ``layer.metadata["affine"]`` (and NIfTI headers in
``metadata["nifti"]``) for the writers. Unreadable input never raises into napari:
the reason is shown as a notification.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from training.io import ImageReadError, Volume, read_image
from training.io.dicom import looks_like_dicom_file
from training.io.windowing import default_window, window_to_limits

SUFFIXES = (
    ".dcm",
    ".dicom",
    ".ima",
    ".nii",
    ".nii.gz",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
)
_DIR_SCAN_LIMIT = 5000


def _candidate_file(path: str) -> bool:
    low = path.lower()
    return low.endswith(SUFFIXES) or looks_like_dicom_file(path)


def _dir_has_candidates(folder: str) -> bool:
    seen = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if n.startswith("."):
                continue
            if _candidate_file(os.path.join(root, n)):
                return True
            seen += 1
            if seen > _DIR_SCAN_LIMIT:
                return False
    return False


def get_reader(path: str | Sequence[str]):
    """Return :func:`read_layers` if ``path`` looks like something we read, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            if not _dir_has_candidates(p):
                return None
        elif not (os.path.isfile(p) and _candidate_file(p)):
            return None
    return read_layers


def volume_to_layer_data(vol: Volume) -> tuple[Any, dict, str]:
    """A :class:`Volume` → napari ``(data, add_kwargs, layer_type)``."""
    scale, translate = vol.display_scale_translate()
    meta = dict(vol.metadata)
    meta.update(
        {
            "affine": vol.affine,
            "modality": vol.modality,
            "window": vol.window,
            "source_kind": vol.metadata.get("source_kind", ""),
            "vismae_io": True,
        }
    )
    n_axes = len(scale)
    n_lead = n_axes - vol.spatial_ndim
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "scale": scale,
        "translate": translate,
        "metadata": meta,
        "units": ("pixel",) * n_lead + ("mm",) * vol.spatial_ndim,
        "axis_labels": (("t",) * n_lead + ("z", "y", "x")[-vol.spatial_ndim :]),
    }
    if vol.kind == "labels":
        names = meta.get("label_names")
        if names:
            kwargs["features"] = {"index": [0, *names], "name": ["background", *names.values()]}
        colors = meta.get("label_colors")  # DICOM-SEG / NIfTI label table colours
        if colors:
            kwargs["colormap"] = {0: (0, 0, 0, 0), **{int(k): tuple(c) for k, c in colors.items()}}
        return vol.array, kwargs, "labels"
    if vol.rgb:
        kwargs["rgb"] = True
    else:
        center, width = default_window(vol.modality, vol.window, vol.array)
        kwargs["contrast_limits"] = list(window_to_limits(center, width))
        kwargs["colormap"] = "gray"
        meta["display_window"] = (center, width)
    return vol.array, kwargs, "image"


def _notify(level: str, message: str) -> None:
    try:
        from napari.utils import notifications as nt

        {"error": nt.show_error, "warning": nt.show_warning}.get(level, nt.show_info)(message)
    except Exception:  # noqa: BLE001 - never let a notification failure break reading
        import logging

        logging.getLogger(__name__).warning("%s", message)


def read_layers(path: str | Sequence[str]) -> list[tuple]:
    """Read ``path`` into napari layer data; problems become notifications, never exceptions."""
    try:
        volumes = read_image(path)
    except ImageReadError as e:
        _notify("error", str(e))
        return [(None,)]  # napari's "nothing to add" sentinel
    except Exception as e:  # noqa: BLE001 - last line of defence for the viewer
        _notify("error", f"Cannot read {path}: unexpected {type(e).__name__}: {e}")
        return [(None,)]
    report = volumes.report
    if report.skipped or report.warnings:
        _notify("warning", report.summary())
    if any(v.metadata.get("orientation") for v in volumes):
        from . import _orientation

        _orientation.install_in_current_viewer()  # R/L, A/P, S/I on the canvas edges
    return [volume_to_layer_data(v) for v in volumes]
