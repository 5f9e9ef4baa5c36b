"""Segment / classify / model-manager widgets in a real viewer (Xvfb), driven by their buttons."""
from __future__ import annotations

import numpy as np
import pytest

from napari_vismae._classify_widget import ClassifyWidget
from napari_vismae._model_manager import ModelManagerWidget
from napari_vismae._segment_widget import SegmentWidget

from .conftest import add_version, click, wait_for_models

pytestmark = pytest.mark.gui


def _viewer_with_ct(make_napari_viewer, ct_volume):
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_volume, name="ct", scale=(2.5, 0.7, 0.7), translate=(10, -5, 3),
                             units=("mm", "mm", "mm"),
                             metadata={"modality": "CT", "window": (40.0, 400.0)})
    return viewer, layer


def _widget(viewer, qtbot, cls):
    w = cls(viewer)
    viewer.window.add_dock_widget(w)
    wait_for_models(qtbot, w, "_select" if cls is ModelManagerWidget else "_model")
    return w


def _segment(qtbot, w):
    before = w.last_result
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)
    return w.last_layer


def test_segment_all_slices_aligned_named_and_new_layer(make_napari_viewer, qtbot, tiny_store,
                                                         ct_volume, heartbeat, error_notifications):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, qtbot, SegmentWidget)
    assert w._image.value is image and w._model.value.name == "tiny-seg"
    w._batch.value = 1
    with heartbeat() as beat:
        labels = _segment(qtbot, w)
    assert labels is viewer.layers["tiny-seg labels"]
    assert labels.data.shape == ct_volume.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert tuple(str(u) for u in labels.units) == tuple(str(u) for u in image.units)
    assert list(labels.features["name"]) == ["background", "organ", "bone"]
    info = labels.metadata["vismae"]
    assert info["role"] == "prediction" and info["source_image"] == "ct"
    assert info["lineage"] == "tiny-seg" and info["model"] == "tiny-seg"
    assert info["class_names"] == ["background", "organ", "bone"]
    np.testing.assert_array_equal(labels.data, w.last_result.labels)
    assert labels.data.any()
    assert len(beat.gaps) >= 3, "the GUI event loop did not run during inference"
    # a new layer is created with its data: no per-voxel undo history to hold
    assert not labels._undo_history, "a new prediction layer must not carry an undo record"
    assert "new layer" in w._status.value
    # a model whose card has no OOD reference says so, never a made-up score
    assert w.last_result.ood is None and "OOD score: n/a" in w._status.value


def test_resegmenting_with_a_new_version_is_one_undo_step(make_napari_viewer, qtbot, tiny_store,
                                                          ct_volume, error_notifications):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, qtbot, SegmentWidget)
    labels = _segment(qtbot, w)
    first = labels.data.copy()
    v1 = add_version(tiny_store.user_dir, "tiny-seg", seed=5)
    w._model.value = next(e for e in w._model.choices if e.path == v1.path)
    assert _segment(qtbot, w) is labels and len(viewer.layers) == 2
    assert (labels.data != first).any() and "voxels changed" in w._status.value
    assert labels.metadata["vismae"]["model"] == v1.card.name
    labels.undo()
    np.testing.assert_array_equal(labels.data, first)  # one Ctrl+Z reverts it all


def test_current_slice_only_touches_that_slice(make_napari_viewer, qtbot, tiny_store, ct_volume,
                                               error_notifications):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    viewer.dims.set_point(0, 10 + 2.5 * 3)  # world z of slice 3
    w = _widget(viewer, qtbot, SegmentWidget)
    w._scope.value = "current slice"
    data = _segment(qtbot, w).data
    assert w.last_result.slices == [3]
    assert data[3].any() and not np.delete(data, 3, axis=0).any()


def test_cancel_stops_a_long_run_early(make_napari_viewer, qtbot, tiny_store, error_notifications):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((200, 64, 64), np.float32), name="long",
                     metadata={"modality": "CT"})
    w = _widget(viewer, qtbot, SegmentWidget)
    w._batch.value = 1
    click(w._run)
    qtbot.waitUntil(lambda: w._progress.value >= 1, timeout=60_000)
    with qtbot.waitSignal(w.worker.finished, timeout=30_000):
        click(w._cancel)
    assert w._progress.value < 200
    assert "tiny-seg labels" not in viewer.layers and w.last_result is None
    assert w._run.enabled and "cancelled" in w._status.value


def test_uncertainty_layer(make_napari_viewer, qtbot, tiny_store, ct_volume, error_notifications):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, qtbot, SegmentWidget)
    assert w.last_result is None
    _segment(qtbot, w)
    assert w.last_result.uncertainty is None  # not asked for: not computed
    w._uncertainty.value = True
    _segment(qtbot, w)
    unc = viewer.layers["tiny-seg uncertainty"].data
    assert unc.shape == ct_volume.shape and 0 <= unc.min() and unc.max() <= np.log(3) + 1e-4


def test_classify_fills_table_and_plots_study(make_napari_viewer, qtbot, tiny_store, ct_volume,
                                              error_notifications):
    viewer, image = _viewer_with_ct(make_napari_viewer, ct_volume)
    w = _widget(viewer, qtbot, ClassifyWidget)
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    table = w.table.value
    assert table["data"] and [row[0] for row in table["data"]] == ["normal", "lesion"]
    assert abs(sum(float(row[1]) for row in table["data"]) - 1) < 0.01
    assert w.last_result.probabilities.shape == (6, 2) and w._canvas is not None
    assert "study (6 slices" in w._decision.value
    # the plot follows napari's (dark) theme
    assert w._canvas.figure.get_facecolor()[:3] != (1.0, 1.0, 1.0)


def test_bad_model_file_is_refused_with_a_notification(make_napari_viewer, qtbot, tiny_store,
                                                       tmp_path, error_notifications):
    viewer = make_napari_viewer()
    w = _widget(viewer, qtbot, ModelManagerWidget)
    before = len(w._select.choices)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    w._file.value = bad
    click(w._open)
    qtbot.waitUntil(lambda: bool(error_notifications), timeout=30_000)  # read off the GUI thread
    assert "weights.pth" in str(error_notifications[0].message)
    assert w._open.enabled
    error_notifications.clear()  # expected
    assert len(w._select.choices) == before


def test_model_manager_lists_and_describes(make_napari_viewer, qtbot, tiny_store,
                                           error_notifications):
    viewer = make_napari_viewer()
    w = _widget(viewer, qtbot, ModelManagerWidget)
    names = sorted(e.name for e in w._select.choices)
    assert names == ["tiny-cls", "tiny-seg"]
    w._select.value = [e for e in w._select.choices if e.name == "tiny-seg"]
    assert "classes: 0=background, 1=organ, 2=bone" in w._card.value
    click(w._refresh)
    assert sorted(e.name for e in w._select.choices) == names
    # a model folder opened by hand is listed and selected
    w._file.value = tiny_store.builtin_dirs[0] / "tiny-seg" / "model_card.json"
    click(w._open)
    qtbot.waitUntil(lambda: w._open.enabled and bool(w._select.value), timeout=30_000)
    assert [e.name for e in w._select.value] == ["tiny-seg"]
