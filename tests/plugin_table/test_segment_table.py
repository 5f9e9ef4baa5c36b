"""Segment table dock in a real viewer (Xvfb): rows, statistics, toggles, jump, CSV."""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt, QTimer

from napari_vismae._segment_table import COL_LOCK, COL_NAME, COL_SHOW, SegmentTableWidget
from napari_vismae._tracking import locked_classes, set_locked_classes
from tests.conftest import load_factor

pytestmark = pytest.mark.gui

SCALE = (2.5, 0.8, 0.8)
NAMES = ["background", "liver", "spleen", "lesion"]


@pytest.fixture(autouse=True)
def no_error_notifications(monkeypatch):
    import napari.utils.notifications as nt

    shown = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(msg))
    yield shown
    assert not shown, shown


def _study(make_napari_viewer, shape=(8, 48, 40)):
    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    ct = rng.normal(40, 30, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[1:6, 5:30, 4:25] = 1
    lab[3, 30:40, 20:36] = 2  # one slice only: the largest slice is 3
    lab[5:7, 35:45, 30:38] = 2
    # a decoy of the same shape listed first: the metadata must win over the shape guess
    viewer.add_image(np.zeros(shape, np.float32), name="decoy", scale=SCALE)
    viewer.add_image(ct, name="ct", scale=SCALE, metadata={"modality": "CT"})
    labels = viewer.add_labels(
        lab, name="pred", scale=SCALE, metadata={"vismae": {"source_image": "ct"}},
        features={"index": [0, 1, 2, 3], "name": NAMES})
    w = SegmentTableWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w, labels, ct


def _wait_rows(qtbot, w, check=lambda rows: bool(rows)):
    qtbot.waitUntil(lambda: w.worker is None and not w._timer.isActive() and check(w.rows),
                    timeout=20_000)


def test_rows_hold_counts_volumes_and_hu_statistics(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    assert w.layer is labels and w.image.name == "ct"
    assert [r.name for r in w.rows] == ["liver", "spleen", "lesion"]
    voxel_ml = np.prod(SCALE) / 1000
    for r in w.rows:
        m = labels.data == r.index
        assert r.voxels == m.sum()
        assert r.volume_ml == pytest.approx(m.sum() * voxel_ml)
        if m.any():
            vals = ct[m].astype(np.float64)
            assert (r.mean, r.std, r.min, r.max) == pytest.approx(
                (vals.mean(), vals.std(), vals.min(), vals.max()), rel=1e-6)
    lesion = w.rows[2]
    assert lesion.voxels == 0 and np.isnan(lesion.mean)
    header = [w.table.horizontalHeaderItem(c).text() for c in range(w.table.columnCount())]
    assert "mL" in header and "mean (HU)" in header
    assert w.table.item(0, COL_NAME).text() == "liver"
    assert w.table.item(0, COL_NAME + 3).text() == f"{int((labels.data == 1).sum()):,}"
    swatch = w.table.item(1, 0).background().color()
    np.testing.assert_allclose([swatch.redF(), swatch.greenF(), swatch.blueF()],
                               labels.get_color(2)[:3], atol=1 / 255)


def test_edits_and_undo_recompute_off_the_gui_thread(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    before = w.rows[2].voxels
    labels.brush_size = 5
    labels.paint((0, 40, 10), 3)  # the layer's public API, as the brush does
    n = int((labels.data == 3).sum())
    assert n > 0
    _wait_rows(qtbot, w, lambda rows: rows[2].voxels == n)
    assert w.rows[2].voxels != before and w.rows[2].largest_slice == 0
    labels.undo()
    _wait_rows(qtbot, w, lambda rows: rows[2].voxels == 0)


def test_large_volume_does_not_block_the_gui(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer, shape=(40, 512, 512))
    _wait_rows(qtbot, w)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    w.recompute()
    assert time.perf_counter() - t0 < 0.25 * load_factor()
    _wait_rows(qtbot, w)
    timer.stop()
    gaps = np.diff([t0, *ticks])
    assert gaps.max() < 0.25 * load_factor(), f"the GUI thread stalled {gaps.max():.2f} s"


def test_show_and_lock_check_boxes(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    liver_color = labels.get_color(1).copy()
    spleen_color = labels.get_color(2).copy()
    data = labels.data.copy()
    show = w.checkbox(1, COL_SHOW)
    qtbot.mouseClick(show, Qt.MouseButton.LeftButton, pos=QPoint(5, show.height() // 2))
    assert not show.isChecked()
    assert labels.get_color(1)[3] == 0  # hidden
    np.testing.assert_allclose(labels.get_color(2), spleen_color)  # others untouched
    np.testing.assert_array_equal(labels.data, data)  # hiding never edits labels
    qtbot.mouseClick(show, Qt.MouseButton.LeftButton, pos=QPoint(5, show.height() // 2))
    np.testing.assert_allclose(labels.get_color(1), liver_color)

    lock = w.checkbox(2, COL_LOCK)
    qtbot.mouseClick(lock, Qt.MouseButton.LeftButton, pos=QPoint(5, lock.height() // 2))
    assert locked_classes(labels) == [2]
    set_locked_classes(labels, [1])  # e.g. from the Fine-tune widget: the boxes follow
    assert w.checkbox(1, COL_LOCK).isChecked() and not w.checkbox(2, COL_LOCK).isChecked()


def test_row_click_jumps_to_the_largest_slice(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    assert w.rows[1].largest_slice == 3
    viewer.dims.set_point(0, 0.0)
    rect = w.table.visualItemRect(w.table.item(1, COL_NAME))
    qtbot.mouseClick(w.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert viewer.dims.current_step[0] == 3
    assert labels.selected_label == 2
    ys, xs = np.nonzero(labels.data[3] == 2)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], [ys.mean() * SCALE[1], xs.mean() * SCALE[2]],
                               atol=1e-3)


def test_export_csv_button_writes_the_table(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    out = tmp_path / "table.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "CSV (*.csv)"))
    qtbot.mouseClick(w.export_button, Qt.MouseButton.LeftButton)
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["liver", "spleen", "lesion"]
    assert int(rows[0]["voxels"]) == int((labels.data == 1).sum())
    assert float(rows[1]["volume_ml"]) == pytest.approx(w.rows[1].volume_ml, rel=1e-5)
    assert float(rows[0]["mean_HU"]) == pytest.approx(w.rows[0].mean, rel=1e-5)
    assert rows[2]["mean_HU"] == "" and rows[1]["largest_slice"] == "3"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary behind


def test_switching_layers_and_2d_labels(make_napari_viewer, qtbot):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    flat = np.zeros((20, 30), np.uint8)
    flat[2:6, 3:8] = 5
    two_d = viewer.add_labels(flat, name="slice labels", scale=(0.5, 0.5))
    viewer.layers.selection.active = two_d  # selecting a Labels layer shows its table
    _wait_rows(qtbot, w, lambda rows: w.layer is two_d and [r.index for r in rows] == [5])
    assert w.image is None  # no image of that shape
    assert w.rows[0].volume_ml == pytest.approx(20 * 0.25 / 100)  # cm²
    assert w.table.horizontalHeaderItem(5).text() == "cm²"
    viewer.layers.remove(two_d)
    _wait_rows(qtbot, w, lambda rows: w.layer is labels and len(rows) == 3)


def test_hidden_class_keeps_its_colour_in_a_save_and_in_a_new_table(make_napari_viewer, qtbot,
                                                                      tmp_path):
    viewer, w, labels, ct = _study(make_napari_viewer)
    _wait_rows(qtbot, w)
    liver = labels.get_color(1).copy()
    box = w.checkbox(1, COL_SHOW)
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(5, box.height() // 2))
    assert labels.get_color(1)[3] == 0
    other = SegmentTableWidget(viewer)  # e.g. the dock closed and opened again
    _wait_rows(qtbot, other)
    assert not other.checkbox(1, COL_SHOW).isChecked()
    np.testing.assert_allclose(other.class_color(labels, 1), liver)
    viewer.layers.selection = {labels}
    out = tmp_path / "pred.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin="napari-vismae")
    [back] = viewer.open(str(out), plugin="napari-vismae")
    np.testing.assert_allclose(back.get_color(1)[:3], liver[:3], atol=1 / 255)
    np.testing.assert_array_equal(back.data, labels.data)


def test_opens_from_the_plugin_menu_entry(make_napari_viewer, qtbot, recwarn):
    viewer = make_napari_viewer()
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[1, 2:5, 2:5] = 2
    viewer.add_labels(lab, name="l")
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment table")
    assert isinstance(w, SegmentTableWidget)
    _wait_rows(qtbot, w, lambda rows: [(r.index, r.voxels) for r in rows] == [(2, 9)])
    w.set_visible(2, False)
    assert viewer.layers["l"].get_color(2)[3] == 0
    assert not [str(x.message) for x in recwarn if "private" in str(x.message).lower()]
