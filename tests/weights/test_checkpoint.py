"""Our checkpoint format: safetensors + JSON model card, atomic, verified on load."""
from __future__ import annotations

import json

import pytest
import torch

from training.data.preprocessing import Preprocessing
from training.models import build_model
from training.weights import checkpoint as ckpt
from training.weights.card import ModelCard
from training.weights.checkpoint import (
    CheckpointError,
    init_from_checkpoint,
    load_any,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
)


@pytest.fixture
def seg():
    torch.manual_seed(0)
    return build_model("segmentation", "tiny", num_classes=3).eval()


def test_round_trip_is_exact(tmp_path, seg):
    classes = [{"index": 0, "name": "background", "color": "#00000000"},
               {"index": 1, "name": "liver", "color": "#E69F00"},
               {"index": 2, "name": "kidney", "color": "#56B4E9"}]
    prep = Preprocessing(modality="CT", ct_window=(50.0, 350.0)).to_dict()
    path = save_checkpoint(seg, tmp_path / "liver-v1", classes=classes, preprocessing=prep,
                           provenance={"parent": "abc", "data": {"slices": 10}})
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "model_card.json"]
    model, card = load_checkpoint(path)
    assert card.class_names == ["background", "liver", "kidney"]
    assert card.prep.ct_window == (50.0, 350.0) and card.provenance["parent"] == "abc"
    assert "torch" in card.provenance["versions"] and card.provenance["created"]
    x = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), seg(x), atol=0, rtol=0)


def test_half_precision_storage(tmp_path, seg):
    path = save_checkpoint(seg, tmp_path / "half", dtype=torch.float16)
    full = save_checkpoint(seg, tmp_path / "full")
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(path) < 0.6 * size(full)
    model, _ = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), seg(x), atol=0.05, rtol=0.05)


def test_no_partial_directory_when_writing_fails(tmp_path, seg, monkeypatch):
    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(seg, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_previous_version(tmp_path, seg, monkeypatch):
    path = save_checkpoint(seg, tmp_path / "m")
    before = (path / "model.safetensors").read_bytes()
    monkeypatch.setattr(ckpt, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        save_checkpoint(seg, path, overwrite=True)
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_to_overwrite_by_default(tmp_path, seg):
    save_checkpoint(seg, tmp_path / "m")
    with pytest.raises(FileExistsError):
        save_checkpoint(seg, tmp_path / "m")


def test_corrupt_weights_are_detected(tmp_path, seg):
    path = save_checkpoint(seg, tmp_path / "m")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: weights do not match"):
        load_checkpoint(path)


def test_card_that_does_not_fit_the_weights(tmp_path, seg):
    path = save_checkpoint(seg, tmp_path / "m")
    card = json.loads((path / "model_card.json").read_text())
    card["architecture"]["depths"] = [2, 2, 4, 2]
    card["architecture"]["decoder_depths"] = None
    (path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): layers\.2\.blocks\.2"):
        load_checkpoint(path)


@pytest.mark.parametrize("text, reason", [("{not json", "not valid JSON"),
                                          ('{"format": "other"}',
                                           "not a napari-vismae model card")])
def test_bad_model_card(tmp_path, seg, text, reason):
    path = save_checkpoint(seg, tmp_path / "m")
    (path / "model_card.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"model_card.json: .*{reason}"):
        read_model_card(path)


def test_mae_checkpoint_initialises_classifier(tmp_path):
    torch.manual_seed(1)
    mae = build_model("mae", "tiny")
    path = save_checkpoint(mae, tmp_path / "mae")
    clf = build_model("classification", "tiny", num_classes=4)
    report = init_from_checkpoint(clf, path)
    assert sorted(report.new) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert any(k.startswith("layers_up") for k in report.ignored)
    torch.testing.assert_close(clf.patch_embed.proj.weight, mae.patch_embed.proj.weight)


def test_encoder_only_transfer_keeps_decoder_fresh(tmp_path):
    mae = build_model("mae", "tiny")
    seg = build_model("segmentation", "tiny", num_classes=2)
    report = init_from_checkpoint(seg, save_checkpoint(mae, tmp_path / "mae"), encoder_only=True)
    assert any(k.startswith("layers_up") for k in report.new)
    assert not any(k.startswith("layers_up") for k in report.loaded)


def test_load_any_reads_our_format(tmp_path, seg):
    model, card, report = load_any(save_checkpoint(seg, tmp_path / "m") / "model.safetensors")
    assert card.task == "segmentation" and report is None


def test_model_card_requires_fields():
    with pytest.raises(ValueError, match="lacks"):
        ModelCard.from_dict({"format": "napari-vismae/1", "name": "x"})
