"""Segmenting one image again (the steady state of a session): the cached model is not
reloaded and the image's prediction layer is updated in place, never rebuilt."""
from __future__ import annotations

import numpy as np
import pytest

from napari_vismae._segment_widget import SegmentWidget

from .conftest import click, wait_for_models

pytestmark = pytest.mark.gui


def _segment(qtbot, w):
    before = w.last_result
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)
    return w.last_layer


def test_second_click_reuses_the_layer_and_the_cached_model(make_napari_viewer, qtbot,
                                                             tiny_store, error_notifications):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).normal(40, 200, (64, 64)).astype(
        np.float32), name="ct", metadata={"modality": "CT", "window": (40.0, 400.0)})
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_for_models(qtbot, w, "_model")
    assert w._image.value is image
    first = _segment(qtbot, w)
    loads, n_layers = w._models.loads, len(viewer.layers)
    assert "new layer" in w._status.value
    before = first.data.copy()
    image.data = image.data[::-1].copy()  # new pixels, same image layer: a diff to write back
    second = _segment(qtbot, w)
    assert second is first, "the second run built a new layer instead of updating it"
    assert len(viewer.layers) == n_layers
    assert w._models.loads == loads, "the model was reloaded between runs"
    np.testing.assert_array_equal(second.data, w.last_result.labels)
    assert (second.data != before).any() and "voxels changed in" in w._status.value


def test_a_click_right_after_a_result_starts_a_new_run(make_napari_viewer, qtbot, tiny_store,
                                                       error_notifications):
    """The last worker's thread may still be winding down when its result has arrived; a
    click then must start a run, not be dropped (the widget is no longer busy)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="ct", metadata={"modality": "CT"})
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_for_models(qtbot, w, "_model")
    _segment(qtbot, w)
    old = w.worker
    old._running = True  # as between its ``returned`` and its thread's end
    try:
        before = w.last_result
        click(w._run)
        assert w.worker is not old, "the click was dropped"
        qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)
    finally:
        old._running = False
