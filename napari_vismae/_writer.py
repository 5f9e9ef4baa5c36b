"""npe2 writers for Labels layers: NIfTI, DICOM-SEG and PNG (atomic, via :mod:`training.io`).

The geometry comes from the labels layer's own metadata when it was read by this
plugin (e.g. a re-opened segmentation); otherwise from the image layer it was
drawn on: the open viewer's image layer read by this plugin whose spatial shape
matches (preferring the same scale/translate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.io import ImageWriteError, writers


def _spatial_shape(meta: dict, shape) -> tuple:
    return tuple(shape[-3:]) if len(shape) >= 3 else tuple(shape)


def _viewer_images():
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001
        return []
    if viewer is None:
        return []
    return [ly for ly in viewer.layers if ly.__class__.__name__ == "Image"]


def find_reference(data: np.ndarray, attributes: dict[str, Any]) -> dict | None:
    """The metadata of the image the labels belong to (or None)."""
    meta = dict(attributes.get("metadata") or {})
    if meta.get("vismae_io") and meta.get("source_kind") in ("dicom", "nifti", "image"):
        return meta
    shape = _spatial_shape(meta, np.shape(data))
    scale = tuple(attributes.get("scale", ()))[-len(shape) :]
    translate = tuple(attributes.get("translate", ()))[-len(shape) :]
    candidates = []
    for layer in _viewer_images():
        lmeta = layer.metadata or {}
        if not lmeta.get("vismae_io"):
            continue
        lshape = tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape)
        if tuple(lshape[-len(shape) :]) != shape or len(lshape) < len(shape):
            continue
        same_geom = (
            (
                np.allclose(layer.scale[-len(shape) :], scale)
                and np.allclose(layer.translate[-len(shape) :], translate)
            )
            if scale
            else False
        )
        candidates.append((not same_geom, lmeta))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]


def _fallback_affine(data, attributes) -> np.ndarray:
    """LPS affine from the layer's scale/translate (world axes taken as z, y, x)."""
    nd = min(np.ndim(data), 3)
    scale = list(attributes.get("scale", [1.0] * nd))[-nd:]
    translate = list(attributes.get("translate", [0.0] * nd))[-nd:]
    if nd == 2:
        scale, translate = [1.0, *scale], [0.0, *translate]
    aff = np.eye(4)
    for col, (s, t) in enumerate(zip(scale, translate, strict=False)):
        aff[2 - col, col] = s
        aff[2 - col, 3] = t
    return aff


def _spatial_labels(data) -> np.ndarray:
    a = np.asarray(data)
    return a[(0,) * (a.ndim - 3)] if a.ndim > 3 else a


def _names_and_colours(data: Any, attributes: dict) -> tuple[dict, dict]:
    """Class names (metadata, features) and RGB colours (the layer's colormap) of the labels."""
    meta = attributes.get("metadata") or {}
    names = dict(meta.get("label_names") or {})
    feats = attributes.get("features")
    try:
        if feats is not None and "index" in feats and "name" in feats:
            names.update(
                {
                    int(i): str(n)
                    for i, n in zip(feats["index"], feats["name"], strict=False)
                    if int(i) > 0
                }
            )
    except Exception:  # noqa: BLE001 - features are optional decoration
        pass
    colours = {}
    cmap = attributes.get("colormap")
    values = sorted({int(v) for v in np.unique(np.asarray(data)) if v != 0} | set(names))
    if cmap is not None and hasattr(cmap, "map"):
        try:
            rgba = np.asarray(cmap.map(np.asarray(values)))
            colours = {v: tuple(rgba[i, :3]) for i, v in enumerate(values)}
        except Exception:  # noqa: BLE001
            colours = {}
    vismae = meta.get("vismae") if isinstance(meta.get("vismae"), dict) else {}
    for k, rgba in (vismae.get("hidden_classes") or {}).items():  # hidden in the segment table
        if int(k) in values:
            colours[int(k)] = tuple(rgba[:3])
    return names, colours


def write_labels_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    ref = find_reference(data, attributes)
    names, colours = _names_and_colours(data, attributes)  # -> <name>.label.txt (ITK-SNAP)
    if ref is None:
        writers.write_labels_nifti(
            path, _spatial_labels(data), affine=_fallback_affine(data, attributes),
            segment_names=names, colors=colours,
        )
    else:
        writers.write_labels_nifti(path, _spatial_labels(data), ref, segment_names=names,
                                   colors=colours)
    return [path]


def write_labels_dicom_seg(path: str, data: Any, attributes: dict) -> list[str]:
    ref = find_reference(data, attributes)
    if ref is None or not ref.get("dicom_headers"):
        raise ImageWriteError(
            path,
            "DICOM-SEG needs the DICOM image these labels were drawn on "
            "to be open in the viewer (read with napari-vismae)",
        )
    meta = attributes.get("metadata") or {}
    names, colours = _names_and_colours(data, attributes)
    writers.write_labels_dicom_seg(
        path,
        _spatial_labels(data),
        ref,
        segment_names=names,
        colors=colours,
        algorithm_name=str(meta.get("algorithm_name", "VIS-MAE")),
        manual=bool(meta.get("manual", False)),
    )
    return [path]


def write_labels_png(path: str, data: Any, attributes: dict) -> list[str]:
    writers.write_labels_png(path, np.asarray(data))
    return [path]
