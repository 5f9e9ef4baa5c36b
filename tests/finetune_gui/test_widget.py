"""The Fine-tune widget in a real viewer (Xvfb): correct -> fine-tune -> versions, Stop,
clear refusals, next uncertain slice, autosave and restore."""
from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_vismae._finetune_widget import FinetuneWidget
from napari_vismae._segment_widget import SegmentWidget
from training.weights.versions import VersionStore

from .conftest import CORRECTED, KIDNEY, pooled_dice

pytestmark = pytest.mark.gui
LINEAGE = "weak-tiny-seg-corrected"


def _setup(make_napari_viewer, study, labels=None):
    vol, _ = study
    viewer = make_napari_viewer()
    image = viewer.add_image(vol, name="ct", scale=(5, 1, 1),
                             metadata={"modality": "CT", "window": (40.0, 400.0)})
    lab = viewer.add_labels(np.zeros(vol.shape, np.uint8) if labels is None else labels,
                            name="ct labels", scale=(5, 1, 1))
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value, w._labels.value = image, lab
    return viewer, image, lab, w


def paint(layer, z, truth) -> None:
    """What a brush stroke does: one history item through data_setitem -> a paint event."""
    idx = np.nonzero(truth[z] != np.asarray(layer.data[z]))
    with layer.block_history():
        layer.data_setitem((np.full(idx[0].shape, z), *idx), truth[z][idx])


def _goto(viewer, z):
    viewer.dims.set_point(0, 5.0 * z)


@pytest.mark.slow
def test_correct_finetune_improves_heldout_and_versions(make_napari_viewer, qtbot, ft_store,
                                                        study, tmp_path):
    from training.weights.checkpoint import load_checkpoint

    vol, truth = study
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    assert w._model.value.name == "weak-tiny-seg" and w._mode.value == "decoder"
    for z in CORRECTED:
        paint(lab, z, truth)
    assert w.corrected() == set(CORRECTED)
    assert w._counts.value.startswith("3 corrected slice(s)") and "kidney" in w._counts.value
    held = [z for z in range(vol.shape[0]) if z not in CORRECTED]
    base_model, card = load_checkpoint(w._model.value.path)
    before = pooled_dice(base_model, card, vol, truth, held)
    before_kidney = pooled_dice(base_model, card, vol, truth, held, KIDNEY)
    _goto(viewer, 11)  # an uncorrected slice: re-segmented automatically after training
    w._length.value = 40
    w._validation.value = "none"  # all three corrected slices train; training Dice labelled
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    w.run()
    assert (w._autosaver().path(w._key(image))).is_file()  # autosaved before the run
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=240_000)
    timer.stop()
    res = w.last_result
    assert res.status == "done" and res.metric == "train_dice"
    assert "TRAINING Dice" in w._ax_score.get_ylabel()
    assert len(ticks) > 20, "the GUI froze during training"
    assert w._curves["loss"] and len(w._curves["score"]) >= 2
    model, card = load_checkpoint(res.entry.path)
    after = pooled_dice(model, card, vol, truth, held)
    after_kidney = pooled_dice(model, card, vol, truth, held, KIDNEY)
    print(f"held-out pooled Dice {before:.3f} -> {after:.3f}; kidney {before_kidney:.3f} -> "
          f"{after_kidney:.3f}")
    assert after_kidney > before_kidney + 0.2
    assert after > before + 0.03
    # the new version is selected here and listed in the Segment widget at once
    assert w._model.value.path == res.entry.path
    assert any(e.path == res.entry.path for e in seg._model.choices)
    assert w.version_names() == ["v0001", "v0002"]
    # auto re-segmentation of the (uncorrected) current slice, not counted as a correction
    qtbot.waitUntil(lambda: np.asarray(lab.data[11]).any(), timeout=60_000)
    assert 11 not in w.corrected()
    # rollback and export
    vs = VersionStore(ft_store.user_dir)
    w.make_active("v0001")
    assert vs.active(LINEAGE).path.name == "v0001"
    assert w._model.value.path.name == "v0001"
    texts = [seg._model.native.itemText(i) for i in range(seg._model.native.count())]
    assert [t for t in texts if t.endswith("[active]")] == \
        [t for t in texts if "v0001" in t]  # the Segment widget shows which one is active
    w._versions.value = next(v for v in w._versions.choices if v.path.name == "v0002")
    out = w.export_version(tmp_path / "exported")
    assert (out / "model.safetensors").is_file()


def test_stop_leaves_previous_version_active(make_napari_viewer, qtbot, ft_store, study):
    from training.weights.checkpoint import load_checkpoint

    vol, truth = study
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    vs = VersionStore(ft_store.user_dir)
    model, card = load_checkpoint(w._model.value.path)
    v1 = vs.add_version(model, card, LINEAGE)
    weights = (v1.path / "model.safetensors").read_bytes()
    w.select_model(v1.path)
    for z in CORRECTED:
        paint(lab, z, truth)
    w._length.value = 5000
    w.run()
    qtbot.waitUntil(lambda: len(w._curves["score"]) >= 2, timeout=120_000)
    assert w._stop.enabled and not w._run.enabled
    w.stop()
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    assert w.last_result.status == "stopped"
    assert w._curves["step"][-1] < 5000
    assert vs.active(LINEAGE).path == v1.path
    assert (v1.path / "model.safetensors").read_bytes() == weights
    assert "stays active" in w._status.value
    assert w._run.enabled and w.version_names() == ["v0001", "v0002"]


def test_empty_or_single_class_set_is_refused_before_starting(make_napari_viewer, ft_store,
                                                              study, monkeypatch):
    import napari.utils.notifications as nt
    shown = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(msg))
    vol, truth = study
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    w.run()
    assert w.worker is None and "empty" in w._status.value and shown
    _goto(viewer, 4)
    w.mark_current()  # marked reviewed, but it holds only background
    assert w.corrected() == {4}
    w.run()
    assert w.worker is None and "only background" in w._status.value


def test_model_writes_are_not_corrections_but_replaced_data_is(make_napari_viewer, ft_store,
                                                               study):
    from napari_vismae._layers import write_labels_undoably

    vol, truth = study
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    write_labels_undoably(lab, truth)  # what the Segment widget does with a prediction
    assert w.corrected() == set()
    edited = np.array(lab.data)
    edited[6, 10:20, 10:20] = 4
    lab.data = edited  # an edit without a paint event (e.g. a script): the data fallback
    assert w.corrected() == {6}


def test_classification_tags_in_a_table(make_napari_viewer, ft_store, cls_model, study):
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    w._model.value = cls_model
    assert w._mode.value == "head" and w._mark.native.isHidden()
    _goto(viewer, 3)
    w._tag_class.value = 1
    w.tag_current()
    w._tag_class.value = 0
    _goto(viewer, 8)
    w.tag_current()
    assert w.tags() == {3: 1, 8: 0}
    assert w._counts.value.startswith("2 tagged slice(s)") and "lesion: 1" in w._counts.value
    assert w._tags.value["data"] == [[3, "lesion"], [8, "normal"]]
    w.tag_current(study=True)
    assert len(w.tags()) == study[0].shape[0] and set(w.tags().values()) == {0}


def test_next_uncertain_slice_goes_to_the_corrupted_one(make_napari_viewer, qtbot, ft_store,
                                                        study):
    vol, truth = study
    vol = vol.copy()
    vol[7] = np.random.default_rng(1).uniform(-200, 300, vol[7].shape)
    viewer, image, lab, w = _setup(make_napari_viewer, (vol, truth))
    w.next_uncertain()
    qtbot.waitUntil(lambda: w.ranking is not None, timeout=60_000)
    qtbot.waitUntil(lambda: "rank 1 of" in w._status.value, timeout=10_000)
    assert w._slice_now() == 7
    assert np.asarray(lab.data[7]).any() and 7 not in w.corrected()  # prediction pre-filled
    w.next_uncertain()  # the next one, without re-ranking
    assert w._slice_now() == w.ranking.slices[1] and "rank 2 of" in w._status.value


def test_edits_survive_closing_napari_and_are_offered_back(make_napari_viewer, qtbot, ft_store,
                                                          study):
    vol, truth = study
    viewer, image, lab, w = _setup(make_napari_viewer, study)
    w._autosave_timer.setInterval(200)
    paint(lab, 2, truth)
    paint(lab, 5, truth)
    saved = w._autosaver().path(w._key(image))
    qtbot.waitUntil(saved.is_file, timeout=10_000)  # autosaved after a short idle time
    edited = np.array(lab.data)
    # "crash": nothing else is saved; a new napari opens the same study
    viewer2 = make_napari_viewer()
    w2 = FinetuneWidget(viewer2)
    viewer2.window.add_dock_widget(w2)
    image2 = viewer2.add_image(vol.copy(), name="same study, reopened",
                               metadata={"modality": "CT"})
    qtbot.waitUntil(lambda: w2._pending_restore is not None, timeout=10_000)
    assert not w2._restore.native.isHidden()  # the offer is shown
    assert w2._image.value is image2 and "Restore 2 corrected slice(s)" in w2._restore.text
    w2.restore()
    restored = w2._labels.value
    np.testing.assert_array_equal(restored.data, edited)
    assert w2.corrected() == {2, 5} and w2._restore.native.isHidden()
