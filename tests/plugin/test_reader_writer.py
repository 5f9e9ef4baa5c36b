"""napari plugin: reader/writer contracts (no viewer) and viewer-level tests (gui)."""

import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file

from napari_vismae import _reader, _writer
from napari_vismae._window_level import AUTO, HEADER, apply_window, presets_for_layer
from tests.io.factory import make_series
from training.io.windowing import CT_PRESETS


# ------------------------------------------------------------------ no viewer needed
def test_get_reader_returns_none_for_unreadable_paths(tmp_path):
    assert _reader.get_reader(str(tmp_path / "missing.dcm")) is None
    (tmp_path / "notes.txt").write_text("x")
    assert _reader.get_reader(str(tmp_path / "notes.txt")) is None
    (tmp_path / "empty").mkdir()
    assert _reader.get_reader(str(tmp_path / "empty")) is None
    assert _reader.get_reader([]) is None


def test_get_reader_accepts_series_folder_and_files(tmp_path):
    make_series(tmp_path / "s", n=3)
    assert _reader.get_reader(str(tmp_path / "s")) is _reader.read_layers
    assert _reader.get_reader(os.path.join(data_path, "example4d.nii.gz")) is _reader.read_layers
    assert _reader.get_reader([get_testdata_file("CT_small.dcm")]) is _reader.read_layers


def test_layer_data_has_mm_geometry_and_window(tmp_path):
    gt = make_series(tmp_path / "s", n=5, spacing=2.5, pixel_spacing=(0.8, 0.7))
    ((data, kwargs, kind),) = _reader.read_layers(str(tmp_path / "s"))
    assert kind == "image" and data.shape == (5, 24, 20)
    assert kwargs["scale"] == pytest.approx((2.5, 0.8, 0.7))
    assert kwargs["translate"] == pytest.approx((50.0, -120.0, -100.0))  # (z, y, x) LPS of voxel 0
    assert kwargs["contrast_limits"] == [-160.0, 240.0]  # header window 40/400
    np.testing.assert_allclose(kwargs["metadata"]["affine"][:3, 3], gt["origin"])
    assert kwargs["metadata"]["modality"] == "CT"


def test_modality_default_contrast_without_header(tmp_path):
    make_series(tmp_path / "ct", n=2, window=None)
    ((_, kw, _),) = _reader.read_layers(str(tmp_path / "ct"))
    assert kw["contrast_limits"] == [-150.0, 250.0]  # CT soft-tissue default
    make_series(tmp_path / "mr", n=2, window=None, modality="MR", slope=None)
    ((data, kw, _),) = _reader.read_layers(str(tmp_path / "mr"))
    lo, hi = kw["contrast_limits"]
    assert data.min() <= lo < hi <= data.max()  # percentiles, not a CT window


def test_reader_turns_errors_into_notifications(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(_reader, "_notify", lambda level, msg: shown.append((level, msg)))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x01")
    assert _reader.read_layers(str(bad)) == [(None,)]
    assert shown[0][0] == "error" and str(bad) in shown[0][1]
    shown.clear()
    rt = get_testdata_file("rtstruct.dcm")
    assert _reader.read_layers(rt) == [(None,)]
    assert "no pixel data" in shown[0][1]
    shown.clear()
    make_series(tmp_path / "s", n=3)
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    layers = _reader.read_layers(str(tmp_path / "s"))
    assert len(layers) == 1 and shown[0][0] == "warning" and "broken.dcm" in shown[0][1]


def test_writer_finds_geometry_in_layer_metadata(tmp_path):
    src = os.path.join(data_path, "anatomical.nii")
    ((data, kwargs, _),) = _reader.read_layers(src)
    labels = (data > np.median(data)).astype(np.uint8)
    attrs = {
        "metadata": kwargs["metadata"],
        "scale": kwargs["scale"],
        "translate": kwargs["translate"],
    }
    out = str(tmp_path / "lab.nii.gz")
    assert _writer.write_labels_nifti(out, labels, attrs) == [out]
    assert np.array_equal(nib.load(out).affine, nib.load(src).affine)


def test_writer_without_reference_uses_scale_translate(tmp_path):
    out = str(tmp_path / "plain.nii")
    lab = np.zeros((3, 4, 5), np.uint8)
    _writer.write_labels_nifti(
        out, lab, {"metadata": {}, "scale": (2, 3, 4), "translate": (10, 20, 30)}
    )
    img = nib.load(out)
    np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], (4, 3, 2))
    with pytest.raises(Exception, match="DICOM-SEG needs"):
        _writer.write_labels_dicom_seg(str(tmp_path / "x.dcm"), lab + 1, {"metadata": {}})


class _FakeLayer:
    def __init__(self, data, metadata, limits=(0, 1)):
        self.data, self.metadata = data, metadata
        self.contrast_limits = list(limits)
        self.contrast_limits_range = list(limits)


def test_presets_are_modality_aware():
    ct = _FakeLayer(np.arange(100.0), {"modality": "CT", "window": (40, 400)})
    names = presets_for_layer(ct)
    assert HEADER in names and set(CT_PRESETS) <= set(names) and AUTO in names
    mr = _FakeLayer(np.arange(100.0), {"modality": "MR", "window": None})
    assert set(presets_for_layer(mr)) == {AUTO}
    apply_window(ct, *CT_PRESETS["lung"])
    assert ct.contrast_limits == [-1350.0, 150.0] and ct.contrast_limits_range[0] <= -1350


# --------------------------------------------------------------------- real viewer
@pytest.mark.gui
def test_viewer_opens_dicom_folder_and_saves_seg_and_nifti(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    make_series(tmp_path / "study", n=6, description="Axial", prefix="a")
    make_series(tmp_path / "study", n=4, description="Other", prefix="b", modality="MR", slope=None)
    layers = viewer.open(str(tmp_path / "study"), plugin="napari-vismae")
    assert sorted(ly.name for ly in layers) == ["CT Axial", "MR Other"]
    ct = viewer.layers["CT Axial"]
    assert tuple(ct.scale) == pytest.approx((2.5, 0.8, 0.7))
    assert list(ct.contrast_limits) == [-160.0, 240.0]
    # paint on napari's own new Labels layer (no metadata): the writer finds the image
    lab = viewer.add_labels(
        np.zeros(ct.data.shape, np.uint8), scale=ct.scale, translate=ct.translate
    )
    lab.data[2:4, 5:10, 5:10] = 1
    seg_path = str(tmp_path / "out" / "seg.dcm")
    nii_path = str(tmp_path / "out" / "seg.nii.gz")
    viewer.layers.selection = {lab}
    lab.save(seg_path, plugin="napari-vismae")
    lab.save(nii_path, plugin="napari-vismae")
    for p in (seg_path, nii_path):
        back = viewer.open(p, plugin="napari-vismae")[0]
        assert back.__class__.__name__ == "Labels"
        np.testing.assert_array_equal(back.data, lab.data)
        np.testing.assert_allclose(back.scale, ct.scale, atol=1e-4)
        np.testing.assert_allclose(back.translate, ct.translate, atol=1e-4)


@pytest.mark.gui
def test_viewer_survives_bad_files(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    bad = tmp_path / "truncated.nii.gz"
    raw = open(os.path.join(data_path, "example4d.nii.gz"), "rb").read()
    bad.write_bytes(raw[: len(raw) // 3])
    assert viewer.open(str(bad), plugin="napari-vismae") == []
    assert viewer.open(get_testdata_file("rtstruct.dcm"), plugin="napari-vismae") == []
    assert len(viewer.layers) == 0


@pytest.mark.gui
def test_viewer_nifti_round_trip_and_window_widget(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    src = os.path.join(data_path, "example4d.nii.gz")
    img_layer = viewer.open(src, plugin="napari-vismae")[0]
    assert img_layer.data.ndim == 4
    lab = viewer.add_labels(
        np.zeros(img_layer.data.shape[1:], np.uint8),
        scale=img_layer.scale[1:],
        translate=img_layer.translate[1:],
    )
    lab.data[5, 10:20, 10:20] = 3
    out = str(tmp_path / "lab.nii.gz")
    lab.save(out, plugin="napari-vismae")
    assert np.array_equal(nib.load(out).affine, nib.load(src).affine)
    # window/level widget: MR/unknown modality gets no CT presets
    _, widget = viewer.window.add_plugin_dock_widget("napari-vismae", "Window / level")
    widget._layer_box.value = img_layer
    assert not set(CT_PRESETS) & set(widget._preset_box.choices)
    ct_dir = tmp_path / "ct"
    make_series(ct_dir, n=3)
    ct = viewer.open(str(ct_dir), plugin="napari-vismae")[0]
    widget._layer_box.value = ct
    assert set(CT_PRESETS) <= set(widget._preset_box.choices)
    widget._preset_box.value = "bone"
    assert list(ct.contrast_limits) == [-500.0, 1300.0]
    widget._width.value = 100.0
    assert list(ct.contrast_limits) == pytest.approx([350.0, 450.0])
