"""A user's session, scripted: run in a fresh process with nothing pre-imported.

    python tests/walkthrough/walkthrough.py OUT_DIR        (needs a display, e.g. xvfb-run -a)

Open the synthetic sample (File > Open Sample), segment every slice with the Segment
button, brush three slices with the prediction layer's painting API, open Fine-tune, run a
short fine-tune, roll back with "Make active", re-segment with a new version (the corrected
slices stay), rename / add / remove layers, use the Window/level presets, save the
prediction as DICOM-SEG (File > Save Selected Layers) and open it again -- clicking the real
buttons, saving screenshots to OUT_DIR, and failing (exit 1) on any error notification, any
exception reaching the event loop, or any broken expectation. Writes OUT_DIR/summary.json.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "walkthrough-out")
STEP_TIMEOUT = 600.0


def main() -> int:
    assert "torch" not in sys.modules and "napari_vismae" not in sys.modules
    OUT.mkdir(parents=True, exist_ok=True)
    import napari
    import numpy as np
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    summary: dict = {"steps": [], "errors": [], "stalls": {}}
    errors = summary["errors"]

    def on_note(event):
        note = event.value if hasattr(event, "value") else event
        if note.severity >= NotificationSeverity.ERROR:
            errors.append(str(note.message))

    notification_manager.notification_ready.connect(on_note)
    excepthook = sys.excepthook

    def hook(kind, value, tb):  # an exception in a Qt callback
        errors.append("".join(traceback.format_exception(kind, value, tb))[-2000:])
        excepthook(kind, value, tb)

    sys.excepthook = hook

    viewer = napari.Viewer(title="napari-vismae walk-through")
    viewer.window.resize(1600, 1000)
    app = QApplication.instance()

    # heartbeat: the longest time the GUI thread did not process events, per step
    beat = {"last": time.perf_counter(), "max": 0.0}

    def tick():
        now = time.perf_counter()
        beat["max"] = max(beat["max"], now - beat["last"] - 0.05)
        beat["last"] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(50)

    def wait(cond, what: str, timeout: float = STEP_TIMEOUT):
        t0 = time.perf_counter()
        while not cond():
            if errors:
                raise AssertionError(f"error while waiting for {what}: {errors}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"no {what} after {timeout:.0f} s")
            app.processEvents()
            time.sleep(0.01)

    def settle(seconds: float = 0.3):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            app.processEvents()
            time.sleep(0.01)

    def step(name: str):
        tick()
        beat["max"] = 0.0
        summary["steps"].append(name)
        print(f"[walkthrough] {name}", flush=True)

    def end_step(shot: str | None = None):
        settle()
        summary["stalls"][summary["steps"][-1]] = round(beat["max"], 3)
        if shot:
            viewer.screenshot(str(OUT / shot), canvas_only=False, flash=False)
        assert not errors, errors

    def click(button):
        assert button.enabled, f"button {button.text!r} is disabled"
        button.native.click()

    # 1. File > Open Sample > VIS-MAE > synthetic abdominal CT --------------------------
    step("open sample")
    layers = viewer.open_sample("napari-vismae", "synthetic_ct")
    image, truth = layers
    assert image.metadata["modality"] == "CT" and truth.name == "ground truth"
    truth.visible = False
    mid = image.data.shape[0] // 2
    viewer.dims.set_point(0, image.translate[0] + image.scale[0] * mid)
    end_step("01-sample.png")

    # 2. Layers > Segment: all slices, Segment button ----------------------------------
    step("segment all slices")
    _, seg = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    wait(lambda: seg._model.value is not None, "segmentation models")
    seg._image.value = image
    assert seg._model.value.name == "abdomen-organs", seg._model.value
    seg._scope.native.setCurrentText("all slices")
    click(seg._run)
    wait(lambda: seg.last_result is not None, "segmentation")
    pred = seg.last_layer
    assert pred in viewer.layers and pred.data.shape == image.data.shape
    assert pred.metadata["vismae"]["source_image"] == image.name and pred.data.any()
    end_step("02-segmented.png")

    # 3. brush three slices (the layer's public painting API, as a brush stroke does) --
    step("brush three slices")
    from napari_vismae import _tracking

    rng = np.random.default_rng(0)
    brushed = [mid - 6, mid, mid + 6]
    pred.n_edit_dimensions = 2
    pred.brush_size = 7
    for z in brushed:
        viewer.dims.set_point(0, image.translate[0] + image.scale[0] * z)
        for k in range(1, int(truth.data.max()) + 1):
            wrong = np.argwhere((truth.data[z] == k) & (pred.data[z] != k))
            for y, x in wrong[rng.permutation(len(wrong))[:25]]:
                pred.selected_label = k
                pred.paint((z, int(y), int(x)), k)
    pred.refresh()
    assert _tracking.corrected_slices(pred) == brushed, _tracking.corrected_slices(pred)
    corrected = {z: pred.data[z].copy() for z in brushed}
    end_step("03-brushed.png")

    # 4. Fine-tune: a short run, then roll back with Make active -------------------------
    step("fine-tune")
    _, ft = viewer.window.add_plugin_dock_widget("napari-vismae", "Fine-tune")
    wait(lambda: ft._labels.value is not None and ft._model.value is not None, "fine-tune set-up")
    assert ft._labels.value is pred, ft._labels.value  # the prediction, not the truth
    ft._model.value = next(e for e in ft._model.choices if e.name == "abdomen-organs")
    ft._length.value = 2
    ft._validation.value = "none"
    click(ft._run)
    wait(lambda: ft.last_result is not None, "fine-tune result")
    result = ft.last_result
    summary["finetune"] = {k: v for k, v in result.items() if isinstance(v, (str, int, float))}
    assert result["status"] == "done", result
    names = ft.version_names()
    assert names[:2] == ["v0001", "v0002"], names
    end_step("04-finetuned.png")

    step("roll back with Make active")
    ft._versions.value = next(v for v in ft._versions.choices if v.path.name == "v0001")
    click(ft._activate)
    settle()
    import json as _json

    active_file = ft._versions.value.path.parent / "active.json"
    assert _json.loads(active_file.read_text())["active"] == "v0001"
    ft._versions.value = next(v for v in ft._versions.choices if v.path.name == "v0002")
    click(ft._activate)  # and forward again, to re-segment with the fine-tuned version
    settle()
    assert _json.loads(active_file.read_text())["active"] == "v0002"
    end_step()

    # 5. re-segment with the new version: same layer, corrected slices kept -------------
    step("re-segment with the fine-tuned version")
    v2 = next(e for e in seg._model.choices if e.path.name == "v0002")
    seg._model.value = v2
    before = seg.last_result
    click(seg._run)
    wait(lambda: seg.last_result is not before, "re-segmentation")
    assert seg.last_layer is pred, "a new version updates the same prediction layer"
    for z, data in corrected.items():
        assert np.array_equal(pred.data[z], data), f"corrected slice {z} was overwritten"
    assert pred.metadata["vismae"]["model"] == v2.card.name
    end_step("05-resegmented.png")

    # 6. change, rename, add layers: every dock keeps its choices -----------------------
    step("rename, add and remove layers")
    image.name = "abdomen CT"
    pts = viewer.add_points(np.array([[mid, 100, 100]]), name="marks", scale=image.scale,
                            translate=image.translate, units=image.units)
    pts.name = "my marks"
    viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="scratch",
                      scale=image.scale, translate=image.translate, units=image.units)
    viewer.layers.remove("my marks")
    settle()
    assert seg._image.value is image and seg._model.value is not None
    assert ft._labels.value is pred, ft._labels.value
    assert ft.version_names()[:2] == ["v0001", "v0002"], (ft.version_names(), ft._model.value)
    assert pred.metadata["vismae"]["source_image"] == "abdomen CT"
    end_step()

    # 7. Layers > Visualize > Window / level: presets ------------------------------------
    step("window/level presets")
    _, wl = viewer.window.add_plugin_dock_widget("napari-vismae", "Window / level")
    wl._layer_box.value = image
    presets = list(wl._preset_box.choices)
    assert {"lung", "bone", "soft tissue", "Header window"} <= set(presets), presets
    wl._preset_box.native.setCurrentIndex(presets.index("bone"))
    lo, hi = image.contrast_limits
    assert wl._preset_box.value == "bone" and hi - lo > 1000, (lo, hi)
    viewer.add_points(np.zeros((1, 3)), name="tmp", units=image.units)  # resets every dock
    viewer.layers.remove("tmp")
    assert list(wl._preset_box.choices) == presets and wl._preset_box.value == "bone"
    wl._preset_box.native.setCurrentIndex(presets.index("soft tissue"))
    end_step("06-window-level.png")

    # 8. File > Save Selected Layers as DICOM-SEG, then open it again -------------------
    step("export DICOM-SEG and reopen")
    viewer.layers.remove("scratch")
    viewer.layers.selection = {pred}
    target = OUT / "prediction.dcm"
    saved = viewer.layers.save(str(target), selected=True, plugin="napari-vismae")
    assert saved and target.is_file(), saved
    reopened = viewer.open(str(target), plugin="napari-vismae")
    assert len(reopened) == 1 and reopened[0].__class__.__name__ == "Labels", reopened
    back = np.asarray(reopened[0].data)
    assert back.shape == pred.data.shape, (back.shape, pred.data.shape)
    assert np.array_equal(back > 0, pred.data > 0), "DICOM-SEG round trip changed the mask"
    for k in np.unique(pred.data[pred.data > 0]):
        assert np.array_equal(back[pred.data == k], np.full((pred.data == k).sum(), k)) or \
            len(np.unique(back[pred.data == k])) == 1, f"segment {k} split on reopening"
    pred.visible = False
    end_step("07-dicom-seg-reopened.png")

    summary["ok"] = True
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    except BaseException:  # noqa: BLE001 - report and fail
        traceback.print_exc()
        rc = 1
    sys.exit(rc)
