"""Sample data: a synthetic CT study with known labels, and real images that ship with
pydicom and pydicom-data (CT, MR, radiograph, ultrasound), all through our reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._reader import read_layers

SYNTHETIC_SEED = 7
SYNTHETIC_SHAPE = (32, 256, 256)  # (z, y, x) voxels, 5 x 1.25 x 1.25 mm


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-vismae", appauthor=False)) / "samples"


def synthetic_ct_files(root: Path | None = None) -> tuple[Path, np.ndarray]:
    """Write (once) the synthetic CT series; -> (series folder, labels (z, y, x))."""
    from training.data import synthetic

    vol, labels = synthetic.make_volume(SYNTHETIC_SEED, SYNTHETIC_SHAPE, spacing=(5.0, 1.25, 1.25))
    folder = (root or _cache_dir()) / f"synthetic-ct-{SYNTHETIC_SEED}"
    if not (folder.is_dir() and len(list(folder.glob("*.dcm"))) == SYNTHETIC_SHAPE[0]):
        synthetic.write_dicom_series(vol, folder, spacing=(5.0, 1.25, 1.25), seed=SYNTHETIC_SEED,
                                     description="Synthetic abdomen (napari-vismae sample)")
    return folder, labels


def synthetic_ct():
    """The synthetic abdominal CT series (read as DICOM) and its ground-truth labels."""
    from training.data.synthetic import CLASSES

    folder, labels = synthetic_ct_files()
    layers = read_layers(str(folder))
    data, kwargs, kind = layers[0]
    colors = {c["index"]: c["color"] for c in CLASSES}
    colors[0] = colors[None] = "transparent"
    from napari.utils.colormaps import DirectLabelColormap

    truth = {"name": "ground truth", "scale": kwargs["scale"], "translate": kwargs["translate"],
             "metadata": {**kwargs["metadata"], "class_names": [c["name"] for c in CLASSES]},
             "features": {"index": [c["index"] for c in CLASSES], "name": [c["name"] for c in CLASSES]},
             "colormap": DirectLabelColormap(color_dict=colors), "opacity": 0.4}
    return [(data, kwargs, kind), (labels, truth, "labels")]


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
