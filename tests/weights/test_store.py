"""The model store: built-in, user folder (env override), opened files, bad files reported."""
from __future__ import annotations

import torch

from training.models import build_model
from training.weights.checkpoint import save_checkpoint
from training.weights.store import ModelStore, user_model_dir


def test_lists_builtin_and_user_models_and_reports_bad_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    assert user_model_dir() == tmp_path / "user"
    save_checkpoint(build_model("segmentation", "tiny", num_classes=2),
                    tmp_path / "builtin" / "seg")
    save_checkpoint(build_model("classification", "tiny", num_classes=2), tmp_path / "user" / "cls")
    broken = tmp_path / "user" / "broken"
    broken.mkdir()
    (broken / "model_card.json").write_text("{oops")
    store = ModelStore(builtin_dirs=[tmp_path / "builtin"])
    entries = store.list()
    assert sorted((e.name, e.source) for e in entries) == [("cls", "user"), ("seg", "built-in")]
    assert [e.name for e in store.list(task="segmentation")] == ["seg"]
    assert len(store.problems) == 1
    assert "broken" in store.problems[0] and "JSON" in store.problems[0]


def test_opening_an_official_file_converts_it(tmp_path, reference_dir):
    ref = torch.load(reference_dir / "vismae_tiny" / "seg.pt", weights_only=True)
    pth = tmp_path / "checkpoint-best.pth"
    torch.save({"model": ref["state_dict"]}, pth)
    store = ModelStore(user_dir=tmp_path / "user")
    entry = store.open(pth)
    assert entry.source == "user" and entry.card.task == "segmentation"
    assert entry.card.num_classes == 3 and entry.card.prep.std == 1.0
    assert [e.name for e in store.list()] == ["checkpoint-best"]
