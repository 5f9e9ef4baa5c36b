"""Sample data: a synthetic CT study with known labels, and real images that ship with
pydicom and pydicom-data (CT, MR, radiograph, ultrasound), all through our reader.

The synthetic study is rendered once and cached on disk (DICOM series + ``labels.npy``):
opening it again only reads the files. The first rendering runs in a thread while the
GUI keeps processing events, so napari never freezes for it.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ._reader import read_layers

SYNTHETIC_SEED = 7
SYNTHETIC_SHAPE = (32, 256, 256)  # (z, y, x) voxels, 5 x 1.25 x 1.25 mm


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-vismae", appauthor=False)) / "samples"


def _labels_path(folder: Path) -> Path:
    """Beside the series folder (inside, the reader would report it as a non-DICOM file)."""
    return folder.with_name(folder.name + "-labels.npy")


def _cached_labels(folder: Path) -> np.ndarray | None:
    """The cached labels if the cached study is complete, else None."""
    try:
        if len(list(folder.glob("*.dcm"))) != SYNTHETIC_SHAPE[0]:
            return None
        labels = np.load(_labels_path(folder), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return labels if labels.shape == SYNTHETIC_SHAPE else None


def _render(folder: Path) -> np.ndarray:
    from training.data import synthetic

    vol, labels = synthetic.make_volume(SYNTHETIC_SEED, SYNTHETIC_SHAPE, spacing=(5.0, 1.25, 1.25))
    synthetic.write_dicom_series(vol, folder, spacing=(5.0, 1.25, 1.25), seed=SYNTHETIC_SEED,
                                 description="Synthetic abdomen (napari-vismae sample)")
    target = _labels_path(folder)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(labels, np.uint8), allow_pickle=False)
    os.replace(tmp, target)  # atomic: the labels mark the study complete
    return labels


def _responsively(fn, *args):
    """``fn(*args)`` in a thread while a running Qt application keeps handling events."""
    try:
        from qtpy.QtWidgets import QApplication
        app = QApplication.instance()
    except Exception:  # noqa: BLE001
        app = None
    if app is None:
        return fn(*args)
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            out["error"] = e

    t = threading.Thread(target=target, name="vismae-sample", daemon=True)
    t.start()
    while t.is_alive():
        app.processEvents()
        t.join(0.02)
    if "error" in out:
        raise out["error"]
    return out["value"]


def _files(root: Path | None = None) -> tuple[Path, np.ndarray]:
    folder = (root or _cache_dir()) / f"synthetic-ct-{SYNTHETIC_SEED}"
    labels = _cached_labels(folder)
    if labels is None:
        labels = _render(folder)
    return folder, labels


def synthetic_ct_files(root: Path | None = None) -> tuple[Path, np.ndarray]:
    """The synthetic CT series, rendered and written once; -> (series folder, labels (z, y, x))."""
    return _responsively(_files, root)


def _warm_layer_types(units) -> None:
    """Build throw-away layers like the sample's, so that what napari imports and sets up
    the first time (pydicom, pandas for features, the unit registry) happens here, off the
    GUI thread; adding the real layers is then quick."""
    from napari.layers import Image, Labels

    Image(np.zeros((2, 2, 2), np.float32), units=units)
    Labels(np.zeros((2, 2, 2), np.uint8), units=units, features={"index": [0], "name": ["x"]})


def _load_synthetic():
    from napari.utils.colormaps import DirectLabelColormap

    from training.data.synthetic import CLASSES

    folder, labels = _files()
    layers = read_layers(str(folder))
    if not layers or layers[0][0] is None:
        return layers
    data, kwargs, kind = layers[0]
    try:
        _warm_layer_types(kwargs.get("units"))
    except Exception:  # noqa: BLE001 - only a warm-up
        pass
    colors = {c["index"]: c["color"] for c in CLASSES}
    colors[0] = colors[None] = "transparent"
    truth = {"name": "ground truth", "scale": kwargs["scale"], "translate": kwargs["translate"],
             "units": kwargs.get("units"), "axis_labels": kwargs.get("axis_labels"),
             "metadata": {**kwargs["metadata"], "class_names": [c["name"] for c in CLASSES]},
             "features": {"index": [c["index"] for c in CLASSES],
                          "name": [c["name"] for c in CLASSES]},
             "colormap": DirectLabelColormap(color_dict=colors), "opacity": 0.4}
    return [(data, kwargs, kind), (labels, truth, "labels")]


def synthetic_ct():
    """The synthetic abdominal CT series (read as DICOM) and its ground-truth labels."""
    layers = _responsively(_load_synthetic)
    from . import _orientation

    _orientation.install_in_current_viewer()  # read in a worker thread: install here
    return layers


def _pydicom_file(name: str):
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except TypeError:  # older pydicom without the download flag
        path = get_testdata_file(name)
    if path is None:
        from napari.utils.notifications import show_error
        show_error(f"Sample {name} is not installed: pip install pydicom-data")
        return [(None,)]
    return read_layers(path)


def ct_small():
    return _pydicom_file("CT_small.dcm")


def mr_small():
    return _pydicom_file("MR_small.dcm")


def radiograph():
    return _pydicom_file("RG1_UNCR.dcm")


def ultrasound():
    return _pydicom_file("US1_UNCR.dcm")
