"""Save a Labels layer through napari (NIfTI + label table, DICOM-SEG) and reopen it: the
layer comes back with the same voxels, class names and colours (real viewer, Xvfb)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def no_error_notifications(monkeypatch):
    import napari.utils.notifications as nt

    shown = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(msg))
    yield shown
    assert not shown, shown


@pytest.mark.parametrize("suffix", [".nii.gz", ".dcm"])
def test_ground_truth_saved_and_reopened_keeps_names_and_colours(make_napari_viewer, tmp_path,
                                                                 suffix):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-vismae", "synthetic_ct")
    truth = viewer.layers["ground truth"]
    truth.data[truth.data == 2] = 0  # a class that is absent is not written
    viewer.layers.selection = {truth}
    out = tmp_path / f"truth{suffix}"
    viewer.layers.save(str(out), selected=True, plugin="napari-vismae")
    assert out.is_file()
    if suffix == ".nii.gz":
        assert (tmp_path / "truth.label.txt").is_file()
    [back] = viewer.open(str(out), plugin="napari-vismae")
    assert back._type_string == "labels"
    np.testing.assert_array_equal(back.data, truth.data)
    np.testing.assert_allclose(back.scale, truth.scale)
    np.testing.assert_allclose(back.translate, truth.translate, atol=1e-4)
    names = dict(zip(back.features["index"], back.features["name"], strict=True))
    for c in (1, 3, 4):
        assert names[c] == dict(zip(truth.features["index"], truth.features["name"],
                                    strict=True))[c]
        np.testing.assert_allclose(back.get_color(c)[:3], truth.get_color(c)[:3], atol=2.5 / 255)
    if suffix == ".dcm":
        assert 2 not in names  # a SEG holds the segments present
    else:  # the NIfTI label table keeps every class of the layer, painted or not
        assert names[2] == "spleen"
        np.testing.assert_allclose(back.get_color(2)[:3], truth.get_color(2)[:3], atol=1 / 255)
