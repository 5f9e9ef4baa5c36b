"""The Fine-tune widget in a real viewer (Xvfb), driven by clicking its buttons: correct ->
fine-tune (in a spawned child) -> versions, rollback, export; never a GUI stall over 0.25 s,
a dock that fits the screen, a plot in napari's theme."""
from __future__ import annotations

import numpy as np
import pytest

from napari_vismae import _tracking
from napari_vismae.finetune import FinetuneWidget
from tests.conftest import load_factor
from training.interactive.autosave import Autosave, work_dir_for
from training.interactive.corrections import study_key
from training.weights.versions import VersionStore

from .conftest import CORRECTED, Heartbeat

pytestmark = pytest.mark.gui
LINEAGE = "weak-tiny-seg-corrected"
STALL = 0.25


def start_long_run(qtbot, w) -> None:
    """Press Fine-tune for a run far longer than the test and wait until it is training."""
    w._length.value = 5000
    click(w._run)
    qtbot.waitUntil(lambda: w._progress.value >= 2, timeout=120_000)


def add_study(viewer, study, with_truth=True, prediction=None):
    """The sample's layout: the image, its ground truth (NOT a prediction), then the
    Segment widget's prediction layer (here an empty one), tracked from the start."""
    vol, truth = study
    image = viewer.add_image(vol, name="ct", scale=(5, 1, 1),
                             metadata={"modality": "CT", "window": (40.0, 400.0)})
    if with_truth:
        viewer.add_labels(truth.copy(), name="ct ground truth", scale=(5, 1, 1))
    data = np.zeros(vol.shape, np.uint8) if prediction is None else prediction
    pred = viewer.add_labels(data, name="weak-tiny-seg labels",
                             scale=(5, 1, 1), metadata={"vismae": {
                                 "role": "prediction", "source_image": "ct",
                                 "model": "weak-tiny-seg", "lineage": "weak-tiny-seg"}})
    _tracking.track(pred)
    return image, pred


def open_widget(viewer):
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w, name="Fine-tune")
    return w


@pytest.fixture(autouse=True)
def _no_napari_settings_save(monkeypatch):
    """napari saves its settings file (a deep copy, 0.05-0.7 s here) whenever a dock widget
    is added; that is napari's cost, not the widget's: kept out of the stall measurements."""
    from napari.settings._base import EventedConfigFileSettings

    monkeypatch.setattr(EventedConfigFileSettings, "_maybe_save", lambda self: None)


def brush(layer, z, truth) -> None:
    """A brush stroke through the layer's public API: paint every pixel of the truth's
    structures on slice z (one history item per label)."""
    for c in np.unique(truth[z]):
        if c == 0:
            continue
        idx = np.nonzero(truth[z] == c)
        with layer.block_history():
            layer.data_setitem((np.full(idx[0].shape, z), *idx), int(c))


def goto(viewer, z):
    viewer.dims.set_point(0, 5.0 * z)


def click(button):
    button.native.click()


def test_correct_finetune_rollback_export_by_clicking(make_napari_viewer, qtbot, ft_store,
                                                     study, tmp_path, monkeypatch, notes):
    from qtpy.QtWidgets import QFileDialog

    vol, truth = study
    beat = Heartbeat()
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    for z in CORRECTED:  # strokes made before the Fine-tune widget is opened
        brush(pred, z, truth)
    beat.begin("open widget", qtbot)
    w = open_widget(viewer)
    beat.end(qtbot)
    assert w._labels.value is pred  # the prediction, not the ground truth
    assert w.corrected() == set(CORRECTED)
    assert w._counts.value.startswith("3 corrected slice(s)") and "kidney" in w._counts.value
    w._length.value = 4
    beat.begin("fine-tune (start, progress, plot, finish)", qtbot)
    click(w._run)
    assert w._stop.enabled and not w._run.enabled
    qtbot.waitUntil(lambda: w.last_result is not None or bool(notes.errors()),
                    timeout=240_000)
    beat.end(qtbot)
    res = w.last_result
    assert res["status"] == "done" and res["validation"] == "k-fold" and res["n_val"] == 3
    key = image.metadata["vismae_study_key"]
    assert Autosave(work_dir_for(ft_store.user_dir)).path(key).is_file()  # saved before
    assert w.plot.losses and len(w.plot.scores) >= 2  # loss curve, baseline + fold scores
    assert "per class, cross-validated" in w._scores.value and "kidney" in w._scores.value
    vs = VersionStore(ft_store.user_dir)
    assert w.version_names() == ["v0001", "v0002"]
    assert vs.active(LINEAGE).path.name == ("v0002" if res["active"] else "v0001")
    assert w._versions.value.path.name == "v0002"  # the new version is selected
    # the dock fits a 1920x1080 screen; long lines wrap; the plot follows the theme
    assert w.native.sizeHint().width() < 500, w.native.sizeHint()
    assert w._status.native.wordWrap()
    from napari.utils.theme import get_theme

    def rgb(theme):
        bg = get_theme(theme).background.as_hex()
        return tuple(int(bg[i:i + 2], 16) / 255 for i in (1, 3, 5))

    def painted():  # the plot's background as rendered
        qtbot.wait(50)
        px = w.plot.canvas.grab().toImage().pixelColor(3, 3)
        return px.redF(), px.greenF(), px.blueF()

    assert viewer.theme == "dark" and sum(rgb("dark")) < 0.6  # a dark background
    assert painted() == pytest.approx(rgb("dark"), abs=0.01)
    viewer.theme = "light"
    assert painted() == pytest.approx(rgb("light"), abs=0.01)
    # napari resets every ComboBox on layer insert / remove / rename: the lists survive
    extra = viewer.add_points(name="p")
    extra.name = "renamed"
    viewer.layers.remove(extra)
    assert w.version_names() == ["v0001", "v0002"] and w._labels.value is pred
    # rollback: pick v0001, click Make active
    w._versions.value = next(v for v in w._versions.choices if v.path.name == "v0001")
    beat.begin("rollback", qtbot)
    click(w._activate)
    beat.end(qtbot)
    assert vs.active(LINEAGE).path.name == "v0001" and w._model.value.path.name == "v0001"
    assert "v0001" in w._status.value and "active" in w._status.value
    # export: the file dialog answers with a path
    w._versions.value = next(v for v in w._versions.choices if v.path.name == "v0002")
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / "exported"), "")))
    click(w._export)
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    beat.stop()
    print("largest GUI stall per step:", beat.report())
    assert max(beat.gaps.values()) < STALL * load_factor(), beat.report()


def test_killed_child_is_an_error_not_a_crash(make_napari_viewer, qtbot, ft_store, study,
                                              notes):
    import os
    import signal

    from training.weights.checkpoint import load_checkpoint

    vol, truth = study
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study, with_truth=False)
    vs = VersionStore(ft_store.user_dir)
    base = next(e for e in ft_store.list() if e.name == "weak-tiny-seg")
    v1 = vs.add_version(*load_checkpoint(base.path), LINEAGE)
    w = open_widget(viewer)
    w.select_model(v1.path)
    for z in CORRECTED:
        brush(pred, z, truth)
    edited = np.array(pred.data)
    start_long_run(qtbot, w)
    os.kill(w.run_view.proc.pid, signal.SIGKILL)
    notes.expect_errors = 1
    qtbot.waitUntil(lambda: len(notes.errors()) == 1, timeout=30_000)
    assert "ended unexpectedly" in notes.errors()[0] and "-9" in notes.errors()[0]
    assert w._run.enabled and not w._stop.enabled
    assert "corrections and the active version are unchanged" in w._status.value
    assert vs.active(LINEAGE).path == v1.path and w.version_names() == ["v0001"]
    np.testing.assert_array_equal(pred.data, edited)
    assert w.corrected() == set(CORRECTED)
    saved = Autosave(work_dir_for(ft_store.user_dir)).load(study_key(vol, image.metadata))
    assert saved.corrected == sorted(CORRECTED)


def test_stop_button_keeps_the_previous_version(make_napari_viewer, qtbot, ft_store, study,
                                                notes):
    vol, truth = study
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    w = open_widget(viewer)
    for z in CORRECTED:
        brush(pred, z, truth)
    start_long_run(qtbot, w)
    click(w._stop)
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    assert w.last_result["status"] == "stopped-unsaved"
    assert w._progress.max == 4 * 5000 and w.plot.steps[-1] < 5000  # stopped in the first
    assert "nothing was saved" in w._status.value
    assert VersionStore(ft_store.user_dir).active(LINEAGE) is None
    assert w._run.enabled
    qtbot.waitUntil(lambda: w.run_view.proc.exitcode is not None, timeout=10_000)
    assert w.run_view.proc.exitcode == 0


def test_refusals_and_marking_by_clicking(make_napari_viewer, ft_store, study, notes):
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    w = open_widget(viewer)
    notes.expect_errors = 2
    click(w._run)
    assert w.run_view.proc is None and "empty" in w._status.value
    goto(viewer, 4)
    click(w._mark)  # reviewed and found right - but it holds only background
    assert w.corrected() == {4} and "slice 4 marked" in w._status.value
    click(w._run)
    assert w.run_view.proc is None and "only background" in w._status.value
    click(w._unmark)
    assert w.corrected() == set()


def test_classification_tags_by_clicking(make_napari_viewer, ft_store, cls_model, study, notes):
    viewer = make_napari_viewer()
    add_study(viewer, study)
    w = open_widget(viewer)
    w._model.value = cls_model
    assert w._mode.value == "head" and w._mark.native.isHidden()
    goto(viewer, 3)
    w._tag_class.value = 1
    click(w._tag_slice)
    w._tag_class.value = 0
    goto(viewer, 8)
    click(w._tag_slice)
    assert w._counts.value.startswith("2 tagged slice(s)") and "lesion: 1" in w._counts.value
    assert w._tags.value["data"] == [[3, "lesion"], [8, "normal"]]
    click(w._tag_study)
    assert w._counts.value.startswith(f"{study[0].shape[0]} tagged slice(s)")


def test_next_uncertain_slice_by_clicking(make_napari_viewer, qtbot, ft_store, study, notes):
    vol, truth = study
    vol = vol.copy()
    vol[7] = np.random.default_rng(1).uniform(-200, 300, vol[7].shape)
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, (vol, truth))
    w = open_widget(viewer)
    click(w._next)
    qtbot.waitUntil(lambda: "rank 1 of" in w._status.value, timeout=60_000)
    assert w.study.slice_now() == 7
    assert np.asarray(pred.data[7]).any() and 7 not in w.corrected()  # prediction pre-filled
    click(w._next)  # the next one, without re-ranking: the most uncertain not next to 7
    ranking, z = w.uncertain.ranking, w.study.slice_now()
    gap = vol.shape[0] // 4
    assert z == next(s for s in ranking.slices if abs(s - 7) >= gap)
    assert f"rank {ranking.slices.index(z) + 1} of" in w._status.value


def test_restore_writes_only_corrected_slices_into_the_prediction(make_napari_viewer, qtbot,
                                                                   ft_store, study, notes):
    vol, truth = study
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    w = open_widget(viewer)
    w.autosave_view.timer.setInterval(200)
    beat = Heartbeat()
    beat.begin("autosave", qtbot)
    brush(pred, 2, truth)
    brush(pred, 5, truth)
    saved = Autosave(work_dir_for(ft_store.user_dir)).path(study_key(vol, image.metadata))
    qtbot.waitUntil(saved.is_file, timeout=10_000)  # autosaved after a short idle time
    beat.end(qtbot)
    edited = np.array(pred.data)
    # "crash"; a new napari opens the same study, segments it again (a different result)
    viewer2 = make_napari_viewer()
    fresh = np.full(vol.shape, 1, np.uint8)
    image2, pred2 = add_study(viewer2, (vol.copy(), truth), prediction=fresh.copy())
    truth_layer = viewer2.layers["ct ground truth"]
    beat.begin("open widget with an autosave", qtbot)
    w2 = open_widget(viewer2)
    qtbot.waitUntil(lambda: not w2._restore.native.isHidden(), timeout=10_000)
    beat.end(qtbot)
    assert w2._labels.value is pred2 and "Restore 2 corrected slice(s)" in w2._restore.text
    beat.begin("restore", qtbot)
    click(w2._restore)
    qtbot.waitUntil(lambda: "restored 2 corrected" in w2._status.value, timeout=10_000)
    beat.end(qtbot)
    beat.stop()
    print("largest GUI stall per step:", beat.report())
    for z in range(vol.shape[0]):
        np.testing.assert_array_equal(pred2.data[z], edited[z] if z in (2, 5) else fresh[z])
    np.testing.assert_array_equal(truth_layer.data, truth)  # the ground truth is untouched
    assert w2.corrected() == {2, 5} and w2._restore.native.isHidden()
    assert max(beat.gaps.values()) < STALL * load_factor(), beat.report()


@pytest.mark.parametrize("damage", ["empty", "truncated", "crc"])
def test_corrupt_autosave_is_a_warning(make_napari_viewer, qtbot, ft_store, study, notes,
                                       damage):
    from training.interactive.corrections import CorrectionSet

    vol, truth = study
    path = Autosave(work_dir_for(ft_store.user_dir)).save(
        CorrectionSet(vol, truth, corrected={2, 5}))
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    path.write_bytes({"empty": b"", "truncated": bytes(raw[:mid]), "crc": bytes(raw)}[damage])
    viewer = make_napari_viewer()
    add_study(viewer, study)
    w = open_widget(viewer)
    qtbot.waitUntil(lambda: bool(notes.warnings()), timeout=10_000)
    assert str(path) in notes.warnings()[0] and "unreadable" in notes.warnings()[0]
    assert w._restore.native.isHidden()


def test_closing_napari_ends_the_training_process(make_napari_viewer, qtbot, ft_store, study,
                                                  notes):
    vol, truth = study
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    w = open_widget(viewer)
    for z in CORRECTED:
        brush(pred, z, truth)
    start_long_run(qtbot, w)
    proc = w.run_view.proc
    viewer.close()
    qtbot.waitUntil(lambda: not proc.is_alive(), timeout=10_000)
    assert VersionStore(ft_store.user_dir).active(LINEAGE) is None


def test_a_worse_run_is_offered_not_made_active(make_napari_viewer, qtbot, ft_store, study,
                                                notes):
    vol, truth = study
    viewer = make_napari_viewer()
    image, pred = add_study(viewer, study)
    w = open_widget(viewer)
    for z in CORRECTED:
        brush(pred, z, truth)
    w._mode.value = "full"
    w._lr.value = "5.0"  # a learning rate that wrecks the model
    w._length.value = 2
    click(w._run)
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=180_000)
    res = w.last_result
    assert res["judged_worse"] and not res["active"] and res["entry"]
    vs = VersionStore(ft_store.user_dir)
    assert vs.active(LINEAGE).path.name == "v0001"
    assert "judged WORSE" in w._status.value and "Make active" in w._status.value
    assert any("judged WORSE" in m for _, m in notes)  # said, not only written
    assert w._versions.value.path.name == "v0002" and "worse" in \
        w._versions.native.currentText()
    click(w._activate)  # the user decides
    assert vs.active(LINEAGE).path.name == "v0002"
