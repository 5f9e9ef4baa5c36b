"""Domain guard, OOD score and the chance label in the Segment / Classify widgets, with the
built-in models on real files, driven by their buttons."""
from __future__ import annotations

import pytest

from napari_vismae import _models
from napari_vismae._classify_widget import ClassifyWidget
from napari_vismae._reader import read_layers
from napari_vismae._segment_widget import SegmentWidget
from tests.plugin.conftest import click, error_notifications, wait_for_models  # noqa: F401
from training.weights.store import ModelStore

pytestmark = pytest.mark.gui


@pytest.fixture
def builtin_store(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    old = _models._store
    _models.set_store(ModelStore(builtin_dirs=[_models.BUILTIN_DIR]))
    yield
    _models._store = old


def _add(viewer, path):
    data, kwargs, kind = read_layers(str(path))[0]
    assert kind == "image"
    return viewer.add_image(data, **kwargs)


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    from napari_vismae._sample_data import synthetic_ct_files

    return synthetic_ct_files(tmp_path_factory.mktemp("sample"))[0]


def shown(widget) -> bool:
    """Visible in its dock (magicgui's ``visible`` also needs the viewer window shown)."""
    return not widget.native.isHidden()


def _mr_path():
    from pydicom.data import get_testdata_file

    return get_testdata_file("MR_small.dcm")


def _widget(viewer, qtbot, cls, model):
    w = cls(viewer)
    viewer.window.add_dock_widget(w)
    wait_for_models(qtbot, w)
    w._model.value = next(e for e in w._model.choices if e.name == model)
    return w


def _wait_result(qtbot, w, before):
    qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)


def test_ct_model_on_mr_asks_first_then_runs_with_a_high_ood_score(
        make_napari_viewer, qtbot, builtin_store, error_notifications):  # noqa: F811
    viewer = make_napari_viewer()
    image = _add(viewer, _mr_path())
    w = _widget(viewer, qtbot, SegmentWidget, "abdomen-organs")
    assert w._image.value is image
    guard = w._guard
    assert shown(guard.label) and shown(guard.accept)
    assert "MR" in guard.label.value and "CT" in guard.label.value
    n_layers = len(viewer.layers)
    click(w._run)  # refused: nothing runs, nothing is added, the widget says why
    qtbot.wait(200)
    assert w.worker is None and len(viewer.layers) == n_layers
    assert "not run" in w._status.value and "apply anyway" in w._status.value
    guard.accept.native.click()  # the user accepts, in the widget
    assert guard.accept.value
    click(w._run)
    _wait_result(qtbot, w, None)
    assert len(viewer.layers) == n_layers + 1
    assert "OOD score" in w._status.value and "UNLIKE THE TRAINING DATA" in w._status.value
    assert w.last_result.ood is not None and w.last_result.ood.min() > 1


def test_ct_model_on_the_synthetic_ct_runs_at_once_with_a_low_score(
        make_napari_viewer, qtbot, builtin_store, synthetic_folder,
        error_notifications):  # noqa: F811
    viewer = make_napari_viewer()
    _add(viewer, synthetic_folder)
    w = _widget(viewer, qtbot, SegmentWidget, "abdomen-organs")
    assert not shown(w._guard.label) and not shown(w._guard.accept)
    w._scope.value = "current slice"
    click(w._run)
    _wait_result(qtbot, w, None)
    assert "like the training data" in w._status.value and "UNLIKE" not in w._status.value
    # switching to an MR image re-arms the guard
    _add(viewer, _mr_path())
    w._image.value = viewer.layers[-1]
    assert shown(w._guard.label) and not w._guard.accept.value


def _chance_copy(user_dir):
    """The built-in classifier under another name, its card saying AUC 0.62 on 40 images (what
    the first built-in classifier scored): the plugin must refuse to decide with it."""
    from training.weights.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(_models.BUILTIN_DIR / "liver-lesion")
    card.name = "chance-lesion"
    card.provenance = {**card.provenance, "metrics": {"val_auc": 0.62},
                       "data": {"val_images": 40}}
    save_checkpoint(model, user_dir / "chance-lesion", card)


def test_chance_level_classifier_gives_no_decision(
        make_napari_viewer, qtbot, builtin_store, synthetic_folder, tmp_path,
        error_notifications):  # noqa: F811
    _chance_copy(tmp_path / "user")
    viewer = make_napari_viewer()
    _add(viewer, synthetic_folder)
    w = _widget(viewer, qtbot, ClassifyWidget, "chance-lesion")
    assert shown(w._chance) and "NO BETTER THAN CHANCE" in w._chance.value
    assert not shown(w._guard.label)
    w._scope.value = "current slice"
    click(w._run)
    _wait_result(qtbot, w, None)
    text = w._decision.value
    assert "no decision" in text and "no better than chance" in text and "OOD score" in text
    # the built-in classifier is informative (held-out AUC in its card): it decides
    w._model.value = next(e for e in w._model.choices if e.name == "liver-lesion")
    assert not shown(w._chance)
    before = w.last_result
    click(w._run)
    _wait_result(qtbot, w, before)
    text = w._decision.value
    assert "no decision" not in text and ("lesion (" in text) and "OOD score" in text


def test_body_region_from_the_dicom_header_is_checked(make_napari_viewer, qtbot, builtin_store,
                                                       error_notifications):  # noqa: F811
    from pydicom.data import get_testdata_file

    from napari_vismae._domain import image_domain

    path = get_testdata_file("J2K_pixelrep_mismatch.dcm")  # a real head CT (BodyPartExamined)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    viewer = make_napari_viewer()
    image = _add(viewer, path)
    assert image_domain(image) == ("CT", "HEAD")
    w = _widget(viewer, qtbot, SegmentWidget, "abdomen-organs")
    assert shown(w._guard.label) and "head" in w._guard.label.value
    assert "abdomen" in w._guard.label.value and "the image is" not in w._guard.label.value
    click(w._run)
    assert w.worker is None and "not run" in w._status.value
