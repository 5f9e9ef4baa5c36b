"""Orientation letters (R/L, A/P, S/I) on the four canvas edges, from the patient geometry
of the image being looked at, following the displayed axes and the 2-D camera's flips.

Four :class:`napari.components.overlays.TextOverlay` are added to the viewer's canvas
overlays (public API, no widget). The reference image is the selected layer if it carries
an LPS ``metadata["affine"]`` (set by our reader), else the top one that does. The letters
name the nearest patient direction of each edge; for an oblique acquisition (shown on its
nearest patient axes, see :mod:`training.io.volume`) they are approximate. In 3-D view they
are hidden.
"""

from __future__ import annotations

import numpy as np

from training.io.volume import edge_letters

EDGES = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left",
         "right": "middle_right"}
KEY = "vismae_orientation_{}"


def _has_geometry(layer) -> bool:
    meta = getattr(layer, "metadata", None) or {}
    return meta.get("affine") is not None and meta.get("orientation") is not None


def reference_layer(viewer):
    active = viewer.layers.selection.active
    if active is not None and _has_geometry(active) and active.visible:
        return active
    for layer in reversed(list(viewer.layers)):
        if _has_geometry(layer) and layer.visible:
            return layer
    return None


def letters(viewer) -> dict[str, str] | None:
    """{edge: letter} for what the viewer shows now, or None (no geometry, 3-D view...)."""
    layer = reference_layer(viewer)
    if layer is None or viewer.dims.ndisplay != 2:
        return None
    affine = np.asarray(layer.metadata["affine"], float)
    n_spatial = 2 if getattr(layer, "rgb", False) and layer.ndim == 2 else min(layer.ndim, 3)
    offset = viewer.dims.ndim - layer.ndim  # layers fill the trailing world axes
    spatial = []
    for world_axis in viewer.dims.displayed:
        axis = world_axis - offset - (layer.ndim - n_spatial)
        if axis < 0:
            return None  # a time axis is displayed
        spatial.append(axis + (3 - n_spatial))
    out = edge_letters(affine, (spatial[0], spatial[1]))
    orient = getattr(_camera(viewer), "orientation2d", ("down", "right"))
    if str(orient[0]) == "up":
        out["top"], out["bottom"] = out["bottom"], out["top"]
    if str(orient[1]) == "left":
        out["left"], out["right"] = out["right"], out["left"]
    return out


def update(viewer, *_) -> None:
    found = letters(viewer)
    for edge in EDGES:
        overlay = viewer.canvas.overlays.get(KEY.format(edge))
        if overlay is None:
            continue
        overlay.visible = found is not None
        overlay.text = found[edge] if found else ""


def install(viewer) -> None:
    """Add the four letters to ``viewer`` (once) and keep them up to date."""
    from napari.components.overlays import TextOverlay

    if KEY.format("top") in viewer.canvas.overlays:
        return
    for edge, position in EDGES.items():
        viewer.canvas.overlays[KEY.format(edge)] = TextOverlay(
            text="", position=position, font_size=14, color=(1.0, 0.85, 0.2, 1.0),
            visible=False)

    def _update(*_):
        update(viewer)

    viewer.dims.events.order.connect(_update)
    viewer.dims.events.ndisplay.connect(_update)
    viewer.layers.events.inserted.connect(_update)
    viewer.layers.events.removed.connect(_update)
    viewer.layers.selection.events.active.connect(_update)
    camera_events = _camera(viewer).events
    for name in ("orientation", "orientation2d"):
        if hasattr(camera_events, name):
            getattr(camera_events, name).connect(_update)
    _update()


def install_in_current_viewer() -> None:
    """Called by the reader: the viewer opening the file gets the letters (GUI thread only;
    a sample read in a worker thread installs them when it returns)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None:
            install(viewer)
    except Exception:  # noqa: BLE001 - decoration: never break reading
        import logging

        logging.getLogger(__name__).debug("orientation letters not installed", exc_info=True)


def _camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 (``viewer.camera`` is
    deprecated there), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera
