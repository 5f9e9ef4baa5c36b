"""Every control works when clicked, in widgets opened the way the menu opens them, and
state-dependent choices (presets, models, classes) survive napari's reset_choices()
(called on every layer insert / remove / rename)."""
from __future__ import annotations

import numpy as np
import pytest

from .conftest import click, wait_for_models

pytestmark = pytest.mark.gui


def _shake(viewer):
    """What makes napari call reset_choices on every dock widget."""
    pts = viewer.add_points(np.zeros((1, 3)), name="pts")
    pts.name = "pts renamed"
    viewer.add_labels(np.zeros((6, 64, 64), np.uint8), name="scratch")
    viewer.layers.remove("pts renamed")


@pytest.fixture
def viewer_ct(make_napari_viewer, ct_volume, tiny_store, error_notifications):
    viewer = make_napari_viewer()
    image = viewer.add_image(ct_volume, name="ct", metadata={"modality": "CT",
                                                             "window": (40.0, 400.0)})
    return viewer, image


def test_window_level_presets_survive_reset_choices_and_apply(viewer_ct):
    viewer, image = viewer_ct
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Window / level")
    presets = list(w._preset_box.choices)
    assert {"Header window", "lung", "bone", "brain", "Custom"} <= set(presets)
    _shake(viewer)
    w.reset_choices()
    assert list(w._preset_box.choices) == presets
    w._preset_box.native.setCurrentIndex(presets.index("lung"))  # the user picks "lung"
    assert w._preset_box.value == "lung"
    np.testing.assert_allclose(image.contrast_limits, [-600 - 750, -600 + 750])
    _shake(viewer)
    assert w._preset_box.value == "lung" and list(w._preset_box.choices) == presets
    w._width.native.setValue(100.0)  # typing a width: Custom
    assert w._preset_box.value == "Custom"
    np.testing.assert_allclose(np.diff(image.contrast_limits), [100.0])
    # an MR layer gets no CT presets
    mr = viewer.add_image(np.random.rand(4, 16, 16), name="mr", metadata={"modality": "MR"})
    w._layer_box.value = mr
    assert "lung" not in w._preset_box.choices and "Auto (0.5-99.5 %)" in w._preset_box.choices


def test_segment_model_and_class_choices_survive_reset_choices(viewer_ct, qtbot):
    viewer, image = viewer_ct
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    wait_for_models(qtbot, w)
    models = list(w._model.choices)
    _shake(viewer)
    assert list(w._model.choices) == models and w._model.value.name == "tiny-seg"
    assert list(w._locked.choices) == [1, 2]
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    w._locked.value = [1]
    _shake(viewer)
    assert list(w._locked.choices) == [1, 2] and list(w._locked.value) == [1]
    assert w._image.value is image
    for scope in ("current slice", "slice range", "all slices"):
        w._scope.native.setCurrentText(scope)
        assert (not w._first.native.isHidden()) == (scope == "slice range")


def test_classify_and_models_widgets_from_the_menu(viewer_ct, qtbot):
    viewer, image = viewer_ct
    _, c = viewer.window.add_plugin_dock_widget("napari-vismae", "Classify")
    _, m = viewer.window.add_plugin_dock_widget("napari-vismae", "Models")
    wait_for_models(qtbot, c)
    wait_for_models(qtbot, m, "_select")
    _shake(viewer)
    assert c._model.value.name == "tiny-cls"
    assert sorted(e.name for e in m._select.choices) == ["tiny-cls", "tiny-seg"]
    click(c._run)
    qtbot.waitUntil(lambda: c.last_result is not None, timeout=60_000)
    assert c._run.enabled and not c._cancel.enabled
    m._select.value = [e for e in m._select.choices if e.name == "tiny-cls"]
    click(m._refresh)
    assert "tiny-cls" in m._card.value


def test_docks_fit_a_1920x1080_screen(viewer_ct, qtbot):
    viewer, _ = viewer_ct
    docks = [viewer.window.add_plugin_dock_widget("napari-vismae", name)[1]
             for name in ("Segment", "Classify", "Window / level", "Models")]
    wait_for_models(qtbot, docks[0])
    seg = docks[0]
    seg._status.value = "a very long status line " * 40  # wraps instead of widening the dock
    for w in docks:
        hint = w.native.sizeHint()
        assert hint.width() <= 600, (w, hint.width())
        assert w.native.minimumSizeHint().height() <= 1000, (w, w.native.minimumSizeHint())
