"""Fixtures for the correct -> fine-tune tests: a weak base model and a phantom study."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_vismae import _models
from training.weights.store import ModelStore

WEAK_BASE = Path(__file__).resolve().parent / "data" / "weak-tiny-seg"
KIDNEY = 3
CORRECTED = (2, 5, 9)  # the slices the tests "paint" (with ground truth)


@pytest.fixture
def study():
    """A 12-slice 64-px phantom CT volume (HU) and its ground-truth labels (5 classes)."""
    from training.data.synthetic import make_volume
    vol, lab = make_volume(3, (12, 64, 64))
    return vol, lab


@pytest.fixture
def ft_store(tmp_path, monkeypatch):
    """An isolated store: the weak base model (never saw a kidney) as a built-in model and an
    empty user model folder (where versions go)."""
    if not WEAK_BASE.is_dir():
        pytest.skip("run python -m tests.finetune_gui.make_weak_base first")
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    shutil.copytree(WEAK_BASE, tmp_path / "builtin" / WEAK_BASE.name)
    store = ModelStore(builtin_dirs=[tmp_path / "builtin"], user_dir=tmp_path / "user")
    old = _models._store
    _models.set_store(store)
    yield store
    _models._store = old


def pooled_dice(model, card, image, labels, slices, cls=None) -> float:
    """Pooled foreground Dice of ``model`` on ``slices`` (one class, or the mean over the
    foreground classes present)."""
    from training.interactive.inference import run, segment_steps
    res = run(segment_steps(model, card, image, slices=list(slices), device="cpu"))
    pred, gt = res.labels[list(slices)], labels[list(slices)]
    classes = [cls] if cls is not None else [c for c in range(1, card.num_classes)
                                              if (gt == c).any()]
    out = []
    for c in classes:
        p, g = pred == c, gt == c
        out.append(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))
    return float(np.mean(out))


@pytest.fixture
def cls_model(ft_store):
    """A random tiny 2-class classifier added to the store's built-in folder."""
    import torch

    from training.data.preprocessing import Preprocessing
    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint
    torch.manual_seed(0)
    path = ft_store.builtin_dirs[0] / "tiny-cls"
    save_checkpoint(build_model("classification", "tiny", num_classes=2, img_size=64), path,
                    preprocessing=Preprocessing(input_size=64, modality="CT").to_dict(),
                    classes=[{"index": 0, "name": "normal", "color": "#009E73"},
                             {"index": 1, "name": "lesion", "color": "#D55E00"}])
    _models.events.models_changed.emit()
    return next(e for e in ft_store.list() if e.name == "tiny-cls")
