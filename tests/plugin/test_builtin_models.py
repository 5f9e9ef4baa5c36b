"""The shipped built-in models (``napari_vismae/models``): their cards record how they were
built and what they score on held-out phantoms, and the numbers hold (slow tests re-measure
them on fresh held-out phantoms through the plugin's inference path)."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from training.weights.card_schema import check_weights_fit, validate_card_dict
from training.weights.checkpoint import load_checkpoint, read_model_card

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "napari_vismae" / "models"
SEG, CLS = MODELS / "abdomen-organs", MODELS / "liver-lesion"
MIN_SEG_DICE = 0.90  # held-out mean foreground Dice at 512 x 512 the shipped segmenter must keep
MIN_AUC = 0.90  # held-out ROC AUC of the shipped classifier (issue 14)
MAX_MB = 8.0  # per model: the repository stays light


def _script():
    spec = importlib.util.spec_from_file_location("build_builtin_models",
                                                  ROOT / "scripts" / "build_builtin_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("folder", [SEG, CLS], ids=lambda p: p.name)
def test_files_validate_and_stay_small(folder):
    d = json.loads((folder / "model_card.json").read_text())
    validate_card_dict(d, str(folder))
    card = read_model_card(folder)
    check_weights_fit(card, folder / "model.safetensors")
    load_checkpoint(folder)  # sha256 verified
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    assert size <= MAX_MB, f"{folder.name} is {size:.1f} MB"
    prov = card.provenance
    assert prov["built_by"] == "scripts/build_builtin_models.py"
    assert "/work/" not in json.dumps(d) and "/home/" not in json.dumps(d)  # no machine paths
    # the recipe, the pretraining (with its input-use check) and every data seed are recorded
    assert prov["recipe"]["finetune"]["lr"] > 0 and prov["recipe"]["init"]
    assert "training.pretrain" in prov["pretraining"]["cmd"]
    assert "uses_input" in prov["pretraining"]["input_use_check"]
    seeds = prov["data"]["seeds"]
    assert {"train", "validation", "test"} <= set(seeds)
    assert seeds["test"] not in (seeds["train"], seeds["validation"], seeds.get("train_hard"),
                                 seeds["pretraining_slices"])  # held out: different cases


def test_segmenter_input_size_was_chosen_by_measurement():
    card = read_model_card(SEG)
    prov = card.provenance
    size = prov["input_size"]
    rows = size["candidates"]
    assert len(rows) >= 2 and card.prep.input_size == size["chosen"] == card.architecture[
        "img_size"]
    for r in rows:
        assert r["side"] == 512 and r["slices"] >= 16
        assert 0 <= r["boundary_f1_1px"] <= 1 and r["boundary_distance_px"] >= 0
        assert r["organs_missed"] >= 0 and r["organs_spurious"] >= 0
        assert r["cpu_s_per_slice"] > 0
    # the recorded rule, re-applied to the recorded table, picks the shipped size
    build = _script()
    args = build.build_parser().parse_args([])
    assert build.choose_size(rows, args.dice_tolerance, args.boundary_tolerance)["size"] == \
        size["chosen"]
    chosen = next(r for r in rows if r["size"] == size["chosen"])
    assert prov["held_out"]["mean_dice"] == chosen["mean_dice"] >= MIN_SEG_DICE
    assert str(size["chosen"]) in size["table_markdown"]


def test_classifier_is_informative_on_held_out_phantoms():
    card = read_model_card(CLS)
    held = card.provenance["held_out"]
    assert held["slices"] >= 200 and held["side"] == 512
    assert held["roc_auc"] >= MIN_AUC and held["pr_auc"] >= MIN_AUC
    assert sum(held["class_counts"]) == held["slices"] and min(held["class_counts"]) > 50
    assert card.chance_warning() is None  # the plugin no longer labels it "no better than chance"
    assert card.provenance["input_size"]["chosen"] == card.prep.input_size


def test_build_script_options_all_have_help():
    build = _script()
    p = build.build_parser()
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, action.dest
    args = p.parse_args([])
    assert args.seg_test_seed not in (args.seg_train_seed, args.seg_val_seed, args.seg_hard_seed)
    assert args.cls_test_seed not in (args.cls_train_seed, args.cls_val_seed)
    assert args.cls_test >= 200


def test_boundary_scores():
    build = _script()
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 16:48] = 1
    b = build.boundary_scores(truth, truth, 3)
    assert b == {"f1": 1.0, "distance": 0.0, "missed": 0, "spurious": 0}
    b = build.boundary_scores(np.roll(truth, 3, axis=1), truth, 3)
    assert b["f1"] < 0.6 and 1.0 < b["distance"] < 3.0
    stairs = truth.copy()  # a 4-px staircase along one edge: found, but not within 1 px
    stairs[16:48:8, 12:16] = 1
    b = build.boundary_scores(stairs, truth, 3)
    assert 0.5 < b["f1"] < 1.0 and b["distance"] > 0
    other = np.where(truth == 1, 2, 0).astype(np.uint8)  # organ 1 missed, organ 2 invented
    b = build.boundary_scores(other, truth, 3)
    assert b == {"f1": 0.0, "distance": None, "missed": 1, "spurious": 1}


@pytest.mark.slow
def test_shipped_segmenter_keeps_its_dice_on_fresh_held_out_phantoms():
    from training.data.synthetic import CLASS_NAMES, make_slices

    build = _script()
    card = read_model_card(SEG)
    images, labels = make_slices(32, 9001, 512)  # a seed no build stage uses
    m = build.measure_segmenter(SEG, images, labels, CLASS_NAMES)
    # per-image Dice varies by seed (0.957 on the card's seed 23, 0.911 here, 0.903 on seed
    # 9003; pooled 0.98 on all three): small spurious spleen/kidney islands score 0 for that
    # class in that image
    assert m["mean_dice"] >= card.provenance["held_out"]["mean_dice"] - 0.06, m
    assert m["mean_dice_pooled"] >= 0.95, m


@pytest.mark.slow
def test_shipped_classifier_auc_on_fresh_held_out_phantoms():
    from training.data.synthetic import CLS_CLASSES, make_classification_set

    build = _script()
    images, y = make_classification_set(200, 9002, 512)
    m = build.measure_classifier(CLS, images, y, [c["name"] for c in CLS_CLASSES])
    assert m["roc_auc"] >= MIN_AUC, m


def test_lesion_masks_match_the_classification_phantoms():
    """The classifier's dense pre-step trains on masks that sit on the (darker) lesions of
    exactly the slices ``make_classification_set`` returns, in its order."""
    from training.data.synthetic import HU, make_classification_set

    build = _script()
    images, y = make_classification_set(8, 5, 64, noise_hu=0.0, blur_px=0.0)
    masks = build.lesion_masks(8, 5, 64)
    assert ((masks.reshape(8, -1).max(1) > 0) == (y == 1)).all()  # a mask iff a lesion
    for img, m in zip(images, masks, strict=True):
        if m.any():
            assert abs(float(np.median(img[m > 0])) - HU["lesion"]) < 30  # per-case +-8 HU
