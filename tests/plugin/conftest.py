"""Plugin fixtures: an isolated model store holding small models made by the tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vismae import _models
from training.data.preprocessing import Preprocessing
from training.models import build_model
from training.weights.checkpoint import save_checkpoint
from training.weights.store import ModelStore

CLASSES = [{"index": 0, "name": "background", "color": "#00000000"},
           {"index": 1, "name": "organ", "color": "#D55E00"},
           {"index": 2, "name": "bone", "color": "#F0E442"}]


@pytest.fixture
def tiny_store(tmp_path, monkeypatch):
    """A store with a random tiny segmentation and classification model (64 px input)."""
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    torch.manual_seed(0)
    prep = Preprocessing(input_size=64, modality="CT").to_dict()
    save_checkpoint(build_model("segmentation", "tiny", num_classes=3, img_size=64),
                    tmp_path / "builtin" / "tiny-seg", classes=CLASSES, preprocessing=prep)
    save_checkpoint(build_model("classification", "tiny", num_classes=2, img_size=64),
                    tmp_path / "builtin" / "tiny-cls", preprocessing=prep,
                    classes=[{"index": 0, "name": "normal", "color": "#009E73"},
                             {"index": 1, "name": "lesion", "color": "#D55E00"}])
    store = ModelStore(builtin_dirs=[tmp_path / "builtin"])
    old = _models._store
    _models.set_store(store)
    yield store
    _models._store = old


@pytest.fixture
def ct_volume():
    rng = np.random.default_rng(0)
    return rng.normal(40, 200, (6, 64, 64)).astype(np.float32)
