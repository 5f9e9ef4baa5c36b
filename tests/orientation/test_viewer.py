"""In napari: the upside-down CT opens anterior up with R/L/A/P letters on the canvas edges,
the letters follow the displayed axes, and every Labels layer the plugin creates shares the
image's units (no "Inconsistent units across layers" warning, issue 12 item 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_vismae import _layers, _orientation
from napari_vismae._models import BUILTIN_DIR
from tests.io.factory import make_series

pytestmark = pytest.mark.gui


@pytest.fixture
def notes(monkeypatch):
    """Every napari notification shown while the test runs."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    yield seen
    notification_manager.notification_ready.disconnect()


def _edges(viewer) -> dict[str, str]:
    out = {}
    for edge in _orientation.EDGES:
        ov = viewer.canvas.overlays[_orientation.KEY.format(edge)]
        assert ov.visible
        out[edge] = ov.text
    return out


def test_upside_down_ct_opens_anterior_up_with_letters(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    [image] = viewer.open(get_testdata_file("explicit_VR-UN.dcm"), plugin="napari-vismae")
    assert _edges(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert (np.asarray(image.data)[:100] <= -300).all()  # air on top, table at the bottom
    assert image.metadata["orientation"]["plane"] == "axial"
    shot = viewer.screenshot(str(tmp_path / "ct.png"), canvas_only=True)
    assert shot.shape[0] > 100
    viewer.scene.camera.orientation2d = ("up", "right")  # flip the view: the letters follow
    assert _edges(viewer)["top"] == "P"
    assert not [n for n in notes if "Inconsistent units" in n]


def test_letters_follow_the_displayed_axes(make_napari_viewer, tmp_path):
    make_series(tmp_path / "s", n=6, rows=16, cols=12, row_dir=(1, 0, 0), col_dir=(0, -1, 0))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(tmp_path / "s"), plugin="napari-vismae")
    assert _edges(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    viewer.dims.order = (1, 0, 2)  # show (slice, column): a coronal reformat
    assert _edges(viewer) == {"top": "I", "bottom": "S", "left": "R", "right": "L"}
    viewer.dims.order = (2, 0, 1)  # show (slice, row): a sagittal reformat
    assert _edges(viewer) == {"top": "I", "bottom": "S", "left": "A", "right": "P"}
    viewer.dims.ndisplay = 3
    assert not viewer.canvas.overlays[_orientation.KEY.format("top")].visible
    viewer.dims.ndisplay = 2
    viewer.layers.remove(image)
    assert not viewer.canvas.overlays[_orientation.KEY.format("top")].visible


@pytest.mark.skipif(not (BUILTIN_DIR / "abdomen-organs").is_dir(),
                    reason="built-in models not built")
def test_plugin_labels_share_the_image_units(make_napari_viewer, tmp_path, notes, qtbot):
    from training.weights.card import ModelCard

    make_series(tmp_path / "s", n=4, rows=16, cols=12)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(tmp_path / "s"), plugin="napari-vismae")
    card = ModelCard.from_dict(json.loads(
        (BUILTIN_DIR / "abdomen-organs" / "model_card.json").read_text()))
    pred = _layers.new_prediction_layer(viewer, image, card, "abdomen-organs",
                                        np.zeros(image.data.shape, np.uint8))
    from napari_vismae.finetune.autosave import new_corrections_layer

    corr = new_corrections_layer(viewer, image, image.data.shape)
    for layer in (pred, corr):
        assert tuple(layer.units) == tuple(image.units)
        np.testing.assert_allclose(layer.scale, image.scale)
    viewer.screenshot(str(tmp_path / "u.png"), canvas_only=True)  # draws: units are checked
    qtbot.wait(50)
    assert viewer.layers.extent.units is not None
    assert not [n for n in notes if "Inconsistent units" in n]


@pytest.mark.parametrize("suffix", [".nii.gz", ".dcm"])
def test_saved_from_the_viewer_onto_the_source_grid(make_napari_viewer, tmp_path, suffix):
    """File ▸ Save on labels painted over the upside-down CT: the file holds them on the
    CT's own (stored) grid, and reopening puts them back where they were painted."""
    viewer = make_napari_viewer()
    path = get_testdata_file("explicit_VR-UN.dcm")
    [image] = viewer.open(path, plugin="napari-vismae")
    painted = np.zeros(image.data.shape, np.uint8)
    painted[120:180, 100:200] = 1  # anterior, patient-right as displayed
    lab = viewer.add_labels(painted, name="painted", metadata=dict(image.metadata),
                            **_layers.aligned_with(image))
    viewer.layers.selection = {lab}
    out = tmp_path / f"painted{suffix}"
    viewer.layers.save(str(out), selected=True, plugin="napari-vismae")
    [back] = viewer.open(str(out), plugin="napari-vismae")
    np.testing.assert_array_equal(np.asarray(back.data).reshape(painted.shape), painted)
    if suffix == ".nii.gz":  # the file itself: the CT's stored rows (posterior → anterior)
        import nibabel as nib

        stored = np.asarray(nib.load(out).dataobj).reshape(painted.shape[::-1]).T
        np.testing.assert_array_equal(stored, painted[::-1])
