"""Engine side of the segment table: statistics and CSV (Qt-free)."""
import csv
import math

import numpy as np
import pytest

from training.io.label_table import present_classes, segment_statistics, write_table_csv


def test_statistics_match_numpy_and_report_listed_empty_classes():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 3, (5, 20, 30)).astype(np.uint8)
    lab[lab == 2] = 7  # a value not listed is still reported
    img = rng.normal(0, 100, lab.shape)
    rows = segment_statistics(lab, [1, 4], {1: "liver", 4: "kidney"}, (3.0, 0.5, 0.5), img)
    assert [(r.index, r.name) for r in rows] == [(1, "liver"), (4, "kidney"), (7, "class 7")]
    for r in rows:
        m = lab == r.index
        assert r.voxels == m.sum() and r.volume_ml == pytest.approx(m.sum() * 0.75 / 1000)
        if m.any():
            assert (r.mean, r.std, r.min, r.max) == pytest.approx(
                (img[m].mean(), img[m].std(), img[m].min(), img[m].max()))
            assert r.largest_slice == int(np.argmax(m.sum((1, 2))))
    assert rows[1].voxels == 0 and math.isnan(rows[1].mean) and rows[1].largest_slice is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, bool])
def test_present_classes_any_integer_type(dtype):
    lab = np.zeros((4, 9), dtype)
    lab[1, 2] = 1
    if dtype is not bool:
        lab[2, 3] = 5
    assert present_classes(lab) == ([1] if dtype is bool else [1, 5])


def test_image_on_another_grid_is_refused():
    with pytest.raises(ValueError, match="differs"):
        segment_statistics(np.zeros((2, 3, 4), np.uint8), image=np.zeros((2, 3, 5)))


def test_csv_written_atomically_with_units(tmp_path):
    lab = np.zeros((6, 8), np.uint8)
    lab[:2, :3] = 2
    rows = segment_statistics(lab, spacing=(0.5, 2.0), image=np.full(lab.shape, -50.0))
    out = tmp_path / "t.csv"
    write_table_csv(out, rows, units="HU", two_d=True)
    got = list(csv.DictReader(out.open()))
    assert got == [{"index": "2", "name": "class 2", "voxels": "6", "area_cm2": "0.06",
                    "mean_HU": "-50", "std_HU": "0", "min_HU": "-50", "max_HU": "-50",
                    "largest_slice": ""}]
