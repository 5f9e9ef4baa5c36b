"""Prediction layers are keyed by source image and model lineage; re-segmenting never
overwrites what the user corrected (slices) or locked (classes). Driven by the Segment
button, with corrections painted through the Labels layer's public API."""
from __future__ import annotations

import numpy as np
import pytest

from napari_vismae import _tracking
from napari_vismae._layers import prediction_layers
from training.interactive.inference import run, segment_steps
from training.weights.checkpoint import load_checkpoint

from .conftest import add_version, click, wait_for_models

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer, qtbot, tiny_store, error_notifications):
    rng = np.random.default_rng(3)
    viewer = make_napari_viewer()
    a = viewer.add_image(rng.normal(40, 200, (6, 64, 64)).astype(np.float32), name="ct A",
                         metadata={"modality": "CT"})
    b = viewer.add_image(rng.normal(40, 200, (6, 64, 64)).astype(np.float32), name="ct B",
                         metadata={"modality": "CT"})
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    wait_for_models(qtbot, w)
    return viewer, w, a, b, tiny_store


def segment(qtbot, w, image, entry=None):
    w._image.value = image
    if entry is not None:
        w._model.value = next(e for e in w._model.choices if e.path == entry.path)
    before = w.last_result
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)
    return w.last_layer


def expected(entry, image) -> np.ndarray:
    model, card = load_checkpoint(entry.path)
    return run(segment_steps(model, card, image.data, modality="CT", batch_size=2)).labels


def brush(layer, z: int, label: int, center=(32, 32), size: int = 15) -> None:
    """A user's brush stroke on slice ``z`` (the layer's public painting API)."""
    layer.n_edit_dimensions = 2
    layer.brush_size = size
    layer.selected_label = label
    layer.paint((z, *center), label)


def test_new_version_updates_the_same_layer_but_never_a_corrected_slice(setup, qtbot):
    viewer, w, a, _, store = setup
    layer = segment(qtbot, w, a)
    assert prediction_layers(viewer, a) == [layer]
    brush(layer, 2, 1)
    brush(layer, 4, 2, center=(10, 50))
    assert _tracking.corrected_slices(layer) == [2, 4]
    before = layer.data.copy()
    v1 = add_version(store.user_dir, "tiny-seg-corrected", seed=11)  # as fine-tuning names it
    assert segment(qtbot, w, a, v1) is layer, "a new version of the lineage updates its layer"
    assert prediction_layers(viewer, a) == [layer] and len(viewer.layers) == 3
    assert layer.metadata["vismae"]["model"] == v1.card.name
    new = expected(v1, a)
    for z in range(6):
        if z in (2, 4):
            np.testing.assert_array_equal(layer.data[z], before[z], err_msg=f"corrected slice {z}")
        else:
            np.testing.assert_array_equal(layer.data[z], new[z], err_msg=f"slice {z}")
    assert (new[[0, 1, 3, 5]] != before[[0, 1, 3, 5]]).any(), "the test needs a different model"
    assert "kept 2 corrected slice(s)" in w._status.value
    # the re-segmentation is a model write: it marks nothing corrected
    assert _tracking.corrected_slices(layer) == [2, 4]


def test_locked_class_is_never_changed(setup, qtbot):
    viewer, w, a, _, store = setup
    layer = segment(qtbot, w, a)
    assert [c for c in w._locked.choices] == [1, 2]  # organ, bone
    w._locked.value = [2]  # the user locks "bone" in the Segment widget
    assert _tracking.locked_classes(layer) == [2]
    before = layer.data.copy()
    v1 = add_version(store.user_dir, "tiny-seg", seed=12)
    segment(qtbot, w, a, v1)
    was_bone, is_bone = before == 2, layer.data == 2
    np.testing.assert_array_equal(was_bone, is_bone)  # no bone voxel removed, none added
    new = expected(v1, a)
    free = ~was_bone & (new != 2)
    np.testing.assert_array_equal(layer.data[free], new[free])
    assert list(w._locked.value) == [2]  # the widget shows the layer's lock
    _tracking.set_locked_classes(layer, [1, 2])  # locked elsewhere (the segment table)
    assert list(w._locked.value) == [1, 2]


def test_second_image_of_the_same_shape_gets_its_own_layer(setup, qtbot):
    viewer, w, a, b, _ = setup
    layer_a = segment(qtbot, w, a)
    data_a = layer_a.data.copy()
    layer_b = segment(qtbot, w, b)
    assert layer_b is not layer_a
    np.testing.assert_array_equal(layer_a.data, data_a)
    assert layer_a.metadata["vismae"]["source_image"] == "ct A"
    assert layer_b.metadata["vismae"]["source_image"] == "ct B"
    assert prediction_layers(viewer, a) == [layer_a] and prediction_layers(viewer, b) == [layer_b]
    # renaming the image keeps its prediction layer; renaming the layer too
    a.name = "ct A (renamed)"
    layer_a.name = "my liver edits"
    brush(layer_a, 1, 2)
    assert segment(qtbot, w, a) is layer_a
    assert layer_a.metadata["vismae"]["source_image"] == "ct A (renamed)"
    assert prediction_layers(viewer, b) == [layer_b]


def test_deleted_prediction_layer_is_recreated(setup, qtbot):
    viewer, w, a, _, _ = setup
    layer = segment(qtbot, w, a)
    viewer.layers.remove(layer)
    again = segment(qtbot, w, a)
    assert again is not layer and again in viewer.layers
    assert prediction_layers(viewer, a) == [again]
