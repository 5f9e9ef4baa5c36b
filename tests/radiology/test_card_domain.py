"""Model cards state the domain (modalities, body regions) a model was trained on."""
from pathlib import Path

import pytest

from training.models import build_model
from training.weights.card import ModelCard
from training.weights.checkpoint import load_checkpoint, read_model_card, save_checkpoint

BUILTIN = Path(__file__).resolve().parents[2] / "napari_vismae" / "models"


@pytest.mark.parametrize("name", ["abdomen-organs", "liver-lesion"])
def test_builtin_cards_state_ct_abdomen(name):
    card = read_model_card(BUILTIN / name)
    assert card.modalities == ["CT"] and card.body_regions == ["abdomen"]
    assert card.domain_mismatch("CT", "ABDOMEN") is None
    assert card.domain_mismatch("CT", "Abdomen/Pelvis") is None  # DICOM spellings vary
    assert card.domain_mismatch("CT", None) is None  # unknown region: no complaint
    assert "MR" in card.domain_mismatch("MR", None)
    msg = card.domain_mismatch("MR", "HEAD")
    assert "the image is MR" in msg and "the image shows head" in msg and "abdomen" in msg
    assert "head" in card.domain_mismatch("CT", "HEAD")
    # organs inside the region are the region (pydicom-data's abdominal CT says PANCREAS)
    assert card.domain_mismatch("CT", "PANCREAS") is None
    assert card.domain_mismatch("CT", "Kidney") is None
    assert "brain" in card.domain_mismatch("CT", "BRAIN")


def test_domain_round_trips_and_old_cards_fall_back_to_preprocessing(tmp_path):
    model = build_model("segmentation", "tiny", num_classes=2, img_size=64)
    path = save_checkpoint(model, tmp_path / "m", name="m",
                           domain={"modalities": ["MR"], "body_regions": ["brain"]})
    _, card = load_checkpoint(path)
    assert card.modalities == ["MR"] and card.body_regions == ["brain"]
    assert card.domain_mismatch("CT", "brain").startswith("the image is CT")
    old = ModelCard.from_dict({k: v for k, v in card.to_dict().items() if k != "domain"})
    assert old.domain == {} and "domain" not in old.to_dict()
    old.preprocessing["modality"] = "CT"
    assert old.modalities == ["CT"] and old.body_regions == []
    assert old.domain_mismatch("US", "anything") == "the image is US, the model was trained on CT"
    assert old.domain_mismatch("OT") is None  # unknown modality never mismatches


@pytest.mark.parametrize("bad", [[], {"modality": ["CT"]}, {"modalities": "CT"},
                                 {"body_regions": [""]}, {"modalities": [3]}])
def test_bad_domain_is_refused(bad):
    card = ModelCard(name="x", task="segmentation", architecture={}, num_classes=2).to_dict()
    card["domain"] = bad
    with pytest.raises(ValueError, match="domain"):
        ModelCard.from_dict(card, "test card")


def test_chance_level_classifier_is_flagged():
    lesion = read_model_card(BUILTIN / "liver-lesion")
    assert lesion.chance_warning() is None  # the shipped classifier is informative
    chance = ModelCard.from_dict({**lesion.to_dict(), "provenance": {
        "metrics": {"val_auc": 0.62}, "data": {"val_images": 40}}})  # the first built-in's
    msg = chance.chance_warning()
    assert msg and "0.62" in msg and "40 images" in msg and "chance" in msg
    assert read_model_card(BUILTIN / "abdomen-organs").chance_warning() is None  # segmentation
    good = ModelCard.from_dict({**lesion.to_dict(), "provenance": {
        "metrics": {"val_auc": 0.9}, "data": {"val_images": 40}}})
    assert good.chance_warning() is None
    small = ModelCard.from_dict({**lesion.to_dict(), "provenance": {
        "metrics": {"val_auc": 0.75}, "data": {"val_images": 6}}})
    assert small.chance_warning() is not None  # 0.75 on 6 images proves nothing
    bare = ModelCard.from_dict({**lesion.to_dict(), "provenance": {}})
    assert bare.chance_warning() is None
