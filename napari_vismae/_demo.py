"""The main job: open napari with the sample CT study and segment it with the built-in model.

    napari-vismae demo                      # interactive
    napari-vismae demo --screenshot s.png   # headless (under Xvfb): segment, save, quit
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def run_demo(screenshot: Path | None = None, timeout: float = 300.0) -> int:
    import napari
    from napari.utils.notifications import show_error
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-vismae demo")
    viewer.window.resize(1400, 900)
    layers = viewer.open_sample("napari-vismae", "synthetic_ct")
    image = layers[0]
    viewer.dims.set_point(0, image.translate[0] + image.scale[0] * (image.data.shape[0] // 2))
    if len(layers) > 1:  # the ground truth: shown outlined for comparison
        layers[1].contour, layers[1].visible = 2, False
    _, widget = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    widget._image.value = image
    if widget._model.value is None:
        show_error("No built-in segmentation model found; see the Models widget.")
        return 1
    started = time.perf_counter()
    widget.run()
    if screenshot is None:
        napari.run()
        return 0

    state = {"rc": 1}

    def poll():
        done = widget.last_result is not None or not widget.worker.is_running
        if done or time.perf_counter() - started > timeout:
            state["rc"] = 0 if widget.last_result is not None else 1
            viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
            print(f"segmented in {time.perf_counter() - started:.1f} s; screenshot: {screenshot}")
            viewer.close()
        else:
            QTimer.singleShot(200, poll)

    QTimer.singleShot(200, poll)
    napari.run()
    return state["rc"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="napari-vismae demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--screenshot", type=Path, help="save a screenshot after segmenting, then quit")
    args = p.parse_args(argv)
    return run_demo(args.screenshot)
