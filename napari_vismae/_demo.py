"""The main job: open napari with the sample CT study and segment it with the built-in model.

    napari-vismae demo                      # interactive
    napari-vismae demo --screenshot s.png   # headless (under Xvfb): segment, save, quit

With ``--screenshot`` the demo waits for the segmentation itself (the prediction layer
holding the result), never for the worker's running state, so the picture always shows it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def run_demo(screenshot: Path | None = None, timeout: float = 300.0) -> int:
    import napari
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
    started = time.perf_counter()
    state = {"rc": 1, "phase": "models", "error": None}

    def finish(message: str, rc: int) -> None:
        state["rc"] = rc
        print(message, file=sys.stdout if rc == 0 else sys.stderr, flush=True)
        if screenshot is not None:
            viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
            print(f"screenshot: {screenshot}", flush=True)
            viewer.close()

    def on_error(exc):
        state["error"] = exc

    def poll():
        elapsed = time.perf_counter() - started
        if state["phase"] == "models":  # the engine loads in a worker thread
            if widget._model.value is not None:
                widget._image.value = image
                widget._run.native.click()
                if widget.worker is None:
                    return finish("the Segment button did not start a segmentation", 1)
                widget.worker.errored.connect(on_error)
                state["phase"] = "segmenting"
            elif elapsed > 10 and not _loading():
                return finish("No built-in segmentation model found; see the Models widget.", 1)
        elif state["phase"] == "segmenting":
            if widget.last_result is not None and widget.last_layer in viewer.layers:
                state["phase"] = "drawn"
                # the layer holds the result: let the canvas draw it once, then shoot
                QTimer.singleShot(300, lambda: finish(
                    f"segmented in {time.perf_counter() - started:.1f} s into "
                    f"'{widget.last_layer.name}'", 0))
                return
            if state["error"] is not None:
                return finish(f"segmentation failed: {state['error']}", 1)
            if widget.worker is not None and widget.worker.abort_requested:
                return finish("segmentation was cancelled", 1)
        if elapsed > timeout:
            return finish(f"no segmentation after {timeout:.0f} s", 1)
        QTimer.singleShot(100, poll)

    QTimer.singleShot(100, poll)
    if screenshot is None:
        napari.run()
        return 0
    napari.run()
    return state["rc"]


def _loading() -> bool:
    from ._models import engine_loaded, models_loading

    return models_loading() or not engine_loaded()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="napari-vismae demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--screenshot", type=Path, help="save a screenshot after segmenting, then quit")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="give up (exit 1) if no segmentation arrives within this many seconds")
    args = p.parse_args(argv)
    return run_demo(args.screenshot, args.timeout)
