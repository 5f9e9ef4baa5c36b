"""docs/screenshot_real_ct.png: a real abdominal CT (pydicom-data's ``explicit_VR-UN.dcm``,
stored upside down: ImageOrientationPatient [1,0,0,0,-1,0]) opened in napari, shown anterior up
with orientation letters, segmented with the built-in demo model, with the segment table.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_real_ct.py [OUT.png]

The built-in model was trained on synthetic phantoms: on a real CT its out-of-distribution
score says so, and the picture shows that honestly.
"""
from __future__ import annotations

import sys
import time

from training.runtime.threads import configure_threads

configure_threads()

import napari  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402


def wait(cond, timeout=120.0):
    t0 = time.perf_counter()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("timed out waiting for the viewer")


def main(out: str = "docs/screenshot_real_ct.png") -> int:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(get_testdata_file("explicit_VR-UN.dcm"), plugin="napari-vismae")
    _, seg = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    wait(lambda: seg._model.value is not None and seg._run.enabled)
    n = len(viewer.layers)
    if seg._guard.accept.visible:  # the guard asks first (body part / modality differ)
        print("domain guard:", seg._guard.label.value if hasattr(seg._guard, "label") else "")
        seg._guard.accept.native.click()  # the user ticks "apply anyway"
    seg._run.native.click()
    wait(lambda: len(viewer.layers) > n and seg._run.enabled)
    viewer.window.add_plugin_dock_widget("napari-vismae", "Segment table")
    for _ in range(100):  # let the table's statistics worker finish
        QApplication.processEvents()
        time.sleep(0.03)
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.window.screenshot(out, canvas_only=False)
    print(f"wrote {out}; status: {seg._status.value if hasattr(seg, '_status') else ''}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
