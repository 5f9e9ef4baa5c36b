"""Segment / classify / model-manager widgets in a real viewer (Xvfb)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_vismae._classify_widget import ClassifyWidget
from napari_vismae._model_manager import ModelManagerWidget
from napari_vismae._segment_widget import SegmentWidget

pytestmark = pytest.mark.gui


def _viewer_with_ct(make_napari_viewer, ct_volume):
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_volume, name="ct", scale=(2.5, 0.7, 0.7), translate=(10, -5, 3),
                             metadata={"modality": "CT", "window": (40.0, 400.0)})
    return viewer, layer


def _widget(viewer, cls):
    w = cls(viewer)
    viewer.window.add_dock_widget(w)
    return w


def test_segment_all_slices_aligned_named_and_undoable(make_napari_viewer, qtbot, tiny_store, ct_volume):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, SegmentWidget)
    assert w._image.value is image and w._model.value.name == "tiny-seg"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    w._batch.value = 1
    w.run()
    qtbot.waitUntil(lambda: "tiny-seg labels" in viewer.layers, timeout=60_000)
    timer.stop()
    labels = viewer.layers["tiny-seg labels"]
    assert labels.data.shape == ct_volume.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert list(labels.features["name"]) == ["background", "organ", "bone"]
    assert labels.metadata["class_names"] == ["background", "organ", "bone"]
    np.testing.assert_array_equal(labels.data, w.last_result.labels)
    assert labels.data.any()
    assert len(ticks) >= 5, "the GUI event loop did not run during inference"
    labels.undo()
    assert not labels.data.any(), "one Ctrl+Z must revert the whole prediction"


def test_current_slice_only_touches_that_slice(make_napari_viewer, qtbot, tiny_store, ct_volume):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    viewer.dims.set_point(0, 10 + 2.5 * 3)  # world z of slice 3
    w = _widget(viewer, SegmentWidget)
    w._scope.value = "current slice"
    w.run()
    qtbot.waitUntil(lambda: "tiny-seg labels" in viewer.layers, timeout=60_000)
    data = viewer.layers["tiny-seg labels"].data
    assert w.last_result.slices == [3]
    assert data[3].any() and not np.delete(data, 3, axis=0).any()


def test_cancel_stops_a_long_run_early(make_napari_viewer, qtbot, tiny_store):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((200, 64, 64), np.float32), name="long",
                     metadata={"modality": "CT"})
    w = _widget(viewer, SegmentWidget)
    w._batch.value = 1
    w.run()
    qtbot.waitUntil(lambda: w._progress.value >= 1, timeout=60_000)
    with qtbot.waitSignal(w.worker.finished, timeout=30_000):
        w.cancel()
    assert w._progress.value < 200
    assert "tiny-seg labels" not in viewer.layers and w.last_result is None
    assert w._run.enabled and "cancelled" in w._status.value


def test_uncertainty_layer(make_napari_viewer, qtbot, tiny_store, ct_volume):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, SegmentWidget)
    w._uncertainty.value = True
    w.run()
    qtbot.waitUntil(lambda: "tiny-seg uncertainty" in viewer.layers, timeout=60_000)
    unc = viewer.layers["tiny-seg uncertainty"].data
    assert unc.shape == ct_volume.shape and 0 <= unc.min() and unc.max() <= np.log(3) + 1e-4


def test_classify_fills_table_and_plots_study(make_napari_viewer, qtbot, tiny_store, ct_volume):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, ClassifyWidget)
    w.run()
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    table = w.table.value
    assert table["data"] and [row[0] for row in table["data"]] == ["normal", "lesion"]
    assert abs(sum(float(row[1]) for row in table["data"]) - 1) < 0.01
    assert w.last_result.probabilities.shape == (6, 2) and w._canvas is not None
    assert "study (6 slices" in w._decision.value


def test_bad_model_file_is_refused_with_a_notification(make_napari_viewer, tiny_store, tmp_path,
                                                       monkeypatch):
    import napari.utils.notifications as nt
    shown = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(msg))
    viewer = make_napari_viewer()
    w = _widget(viewer, ModelManagerWidget)
    before = len(w._select.choices)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    w.open_file(bad)
    assert shown and "weights.pth" in shown[0]
    assert len(w._select.choices) == before


def test_model_manager_lists_and_describes(make_napari_viewer, tiny_store):
    viewer = make_napari_viewer()
    w = _widget(viewer, ModelManagerWidget)
    names = sorted(e.name for e in w._select.choices)
    assert names == ["tiny-cls", "tiny-seg"]
    w._select.value = [e for e in w._select.choices if e.name == "tiny-seg"]
    assert "classes: 0=background, 1=organ, 2=bone" in w._card.value
