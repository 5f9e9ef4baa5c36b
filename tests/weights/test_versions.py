"""Model versions: immutable, numbered, with parent provenance, active pointer and rollback."""
from __future__ import annotations

import pytest
import torch

from training.models import build_model
from training.weights.card import ModelCard
from training.weights.checkpoint import load_checkpoint
from training.weights.store import ModelStore
from training.weights.versions import VersionStore


def _card(model):
    return ModelCard(name="x", task="segmentation", architecture=model.cfg.to_dict(), num_classes=2)


def test_versions_rollback_and_export(tmp_path):
    store = VersionStore(tmp_path)
    torch.manual_seed(0)
    m1 = build_model("segmentation", "tiny", num_classes=2)
    v1 = store.add_version(m1, _card(m1), "liver")
    m2 = build_model("segmentation", "tiny", num_classes=2)
    v2 = store.add_version(m2, _card(m2), "liver", parent=v1)
    assert [e.path.name for e in store.versions("liver")] == ["v0001", "v0002"]
    assert store.active("liver").path == v2.path
    assert v2.card.provenance["parent"]["weights_sha256"] == v1.card.weights_sha256
    assert v2.card.name == "liver v0002"
    before = (v1.path / "model.safetensors").read_bytes()
    store.set_active("liver", "v0001")
    assert store.active("liver").path == v1.path
    assert (v1.path / "model.safetensors").read_bytes() == before  # rollback changes no weights
    out = store.export(v2, tmp_path / "exported")
    model, card = load_checkpoint(out)
    assert card.name == "liver v0002"
    with pytest.raises(KeyError):
        store.set_active("liver", "v0009")
    assert store.lineages() == ["liver"]
    # versions are ordinary checkpoints: the model store lists them (and the exported copy)
    names = sorted(e.name for e in ModelStore(user_dir=tmp_path).list())
    assert names == ["liver v0001", "liver v0002", "liver v0002"]


def test_failed_save_leaves_no_version_and_keeps_active(tmp_path, monkeypatch):
    store = VersionStore(tmp_path)
    m = build_model("segmentation", "tiny", num_classes=2)
    v1 = store.add_version(m, _card(m), "liver")
    from training.weights import checkpoint
    monkeypatch.setattr(checkpoint, "save_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        store.add_version(m, _card(m), "liver", parent=v1)
    assert [e.path.name for e in store.versions("liver")] == ["v0001"]
    assert store.active("liver").path == v1.path
    assert sorted(p.name for p in (tmp_path / "liver").iterdir()) == ["active.json", "v0001"]
