"""OOD score (training/interactive/ood.py): stored in the built-in cards, validated, and it
separates the synthetic CT the models were trained on from real MR, radiograph and head CT."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from training.data import synthetic
from training.interactive import ood
from training.interactive.inference import classify_steps, run, segment_steps
from training.weights.card_schema import validate_card_dict
from training.weights.checkpoint import load_checkpoint

MODELS = Path(__file__).resolve().parents[2] / "napari_vismae" / "models"


def _real(name):
    from pydicom.data import get_testdata_file

    from training.io import read_image

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    v = read_image(path)[0]
    return np.asarray(v.array, np.float32), v.modality, v.window


@pytest.fixture(scope="module")
def organs():
    model, card = load_checkpoint(MODELS / "abdomen-organs")
    return model.eval(), card


def test_builtin_cards_carry_a_valid_reference():
    for name in ("abdomen-organs", "liver-lesion"):
        d = json.loads((MODELS / name / "model_card.json").read_text())
        validate_card_dict(d, name)
        ref = ood.reference_of(load_checkpoint(MODELS / name)[1])
        assert ref is not None and len(ref["mean"]) == len(ref["std"]) == 256
        assert ref["score_p95"] > ref["score_median"] > 0


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.update(std=r["std"][:-1]), "equally long"),
    (lambda r: r["std"].__setitem__(0, 0.0), "positive"),
    (lambda r: r.update(score_p95="x"), "score_p95"),
    (lambda r: r["mean"].__setitem__(3, None), "finite numbers"),
])
def test_schema_refuses_a_broken_reference(breakage, message):
    d = json.loads((MODELS / "abdomen-organs" / "model_card.json").read_text())
    bad = copy.deepcopy(d)
    breakage(bad["provenance"]["ood_reference"])
    with pytest.raises(ValueError, match=message):
        validate_card_dict(bad, "card")


def test_score_separates_in_domain_from_other_modalities_and_regions(organs):
    model, card = organs
    vol, _ = synthetic.make_volume(7, (8, 256, 256), spacing=(5.0, 1.25, 1.25))
    inside = run(segment_steps(model, card, vol, modality="CT", batch_size=8)).ood
    assert inside is not None and np.median(inside) < ood.FLAG_AT
    outside = {}
    for name in ("MR_small.dcm", "RG1_UNCR.dcm", "J2K_pixelrep_mismatch.dcm"):  # MR, CR, head CT
        arr, modality, window = _real(name)
        outside[name] = float(np.median(run(segment_steps(
            model, card, arr, modality=modality, window=window)).ood))
    assert min(outside.values()) > ood.FLAG_AT, outside
    assert min(outside.values()) > 3 * np.median(inside), (np.median(inside), outside)
    assert "UNLIKE" in ood.summary([min(outside.values())])
    assert "like the training data" in ood.summary(inside)


def test_classifier_scores_and_no_reference_gives_none(organs):
    model, card = load_checkpoint(MODELS / "liver-lesion")
    vol, _ = synthetic.make_volume(7, (4, 256, 256), spacing=(5.0, 1.25, 1.25))
    res = run(classify_steps(model.eval(), card, vol, modality="CT"))
    assert res.ood.shape == (4,) and np.median(res.ood) < ood.FLAG_AT
    model, card = organs
    card = copy.deepcopy(card)
    del card.provenance["ood_reference"]
    res = run(segment_steps(model, card, vol[:1], modality="CT"))
    assert res.ood is None and "n/a" in ood.summary(res.ood)
    assert not model.layers[-1]._forward_hooks, "the feature hook must be removed"
