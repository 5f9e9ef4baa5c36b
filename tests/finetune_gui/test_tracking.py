"""napari_vismae._tracking: user edits of a Labels layer mark slices corrected; model writes
do not; locks and corrected slices live in layer.metadata["vismae"]."""
from __future__ import annotations

import numpy as np
import pytest

from napari_vismae import _tracking as tr
from napari_vismae._layers import write_labels_undoably

pytestmark = pytest.mark.gui


@pytest.fixture
def labels(make_napari_viewer):
    viewer = make_napari_viewer()
    lab = viewer.add_labels(np.zeros((8, 32, 32), np.uint8), name="pred",
                            metadata={"vismae": {"role": "prediction", "model": "m"}})
    tr.track(lab)
    tr.track(lab)  # idempotent: one tracker, one mark per stroke
    return viewer, lab


def _goto(viewer, z):
    viewer.dims.set_point(0, float(z))


def test_brush_fill_erase_mark_only_their_slice(labels, qtbot):
    viewer, lab = labels
    lab.paint((2, 10, 10), 3)
    assert tr.corrected_slices(lab) == [2]
    lab.fill((5, 1, 1), 1)
    assert tr.corrected_slices(lab) == [2, 5]
    lab.paint((5, 10, 10), 0)  # erase
    assert tr.corrected_slices(lab) == [2, 5]
    assert lab.metadata["vismae"]["corrected_slices"] == [2, 5]
    assert lab.metadata["vismae"]["role"] == "prediction"  # other keys kept


def test_model_writes_do_not_count_and_undo_does(labels, qtbot):
    viewer, lab = labels
    pred = np.zeros(lab.data.shape, np.uint8)
    pred[:, 4:20, 4:20] = 2
    write_labels_undoably(lab, pred)
    qtbot.wait(10)  # the deferred fingerprint refresh
    _goto(viewer, 6)
    assert tr.corrected_slices(lab) == []
    lab.undo()  # Ctrl+Z of the model write, seen on slice 6
    assert tr.corrected_slices(lab) == [6]
    _goto(viewer, 3)  # scrolling is not an edit
    _goto(viewer, 6)
    assert tr.corrected_slices(lab) == [6]
    lab.paint((3, 10, 10), 1)
    qtbot.wait(10)
    lab.undo()  # undoing one's own stroke keeps the slice marked (it was reviewed)
    assert tr.corrected_slices(lab) == [3, 6]


def test_mark_unmark_and_locks(labels):
    _, lab = labels
    tr.mark_corrected(lab, 7)
    tr.mark_corrected(lab, 1)
    tr.mark_corrected(lab, 7, False)
    assert tr.corrected_slices(lab) == [1]
    with pytest.raises(IndexError, match="slice 8"):
        tr.mark_corrected(lab, 8)
    tr.set_locked_classes(lab, [3, 1, 3])
    assert tr.locked_classes(lab) == [1, 3]
    assert lab.metadata["vismae"]["locked_classes"] == [1, 3]


def test_refuses_non_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((4, 8, 8)))
    with pytest.raises(TypeError, match="not a napari Labels layer"):
        tr.track(img)


def test_a_resegmentation_leaves_locked_classes_alone():
    from napari_vismae.finetune.uncertain import keep_locked

    cur = np.array([[0, 1, 1], [2, 2, 0]], np.uint8)
    new = np.array([[1, 0, 3], [3, 2, 2]], np.uint8)
    # class 1 locked: its voxels stay, and it does not grow; others follow the model
    np.testing.assert_array_equal(keep_locked(cur, new, [1]), [[0, 1, 1], [3, 2, 2]])
    np.testing.assert_array_equal(keep_locked(cur, new, []), new)
