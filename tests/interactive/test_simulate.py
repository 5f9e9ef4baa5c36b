"""The simulated-user benchmark: the user corrects exactly k slices with the truth, the GUI's
fine-tune job trains on exactly those, only the uncorrected slices are scored, slices-to-target
is read off the table right, and the CLI writes its outputs (tiny models, a few seconds)."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from training.interactive import simulate as sim
from training.interactive import simulate_report as report

TINY = sim.SimConfig(datasets=("phantom",), starts=("random",), modes=("decoder",), ks=(2,),
                     seeds=(0,), selections=("even",), preset="tiny", n_unlabeled=8, n_pool=12,
                     n_small=6, n_val=4, volume_slices=6, volume_size=64, pretrain_steps=2,
                     start_steps=4, start_batch=4, session_steps=3, session_batch=2)


@pytest.mark.parametrize("n,k", [(6, 1), (24, 5), (24, 10), (32, 10), (10, 10)])
def test_even_selection_picks_exactly_k_distinct_slices(n, k):
    for seed in range(4):
        s = sim.choose_slices(n, k, "even", seed)
        assert len(s) == k == len(set(s)) and all(0 <= i < n for i in s)
        assert s == sorted(s)
    with pytest.raises(ValueError, match="k must be"):
        sim.choose_slices(5, 6, "even", 0)


def test_active_selection_takes_the_most_uncertain_first():
    assert sim.choose_slices(8, 3, "active", 0, ranking=[5, 1, 7, 0, 2]) == [1, 5, 7]


def test_user_labels_hold_the_truth_on_the_corrected_slices_only():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (6, 8, 8)).astype(np.uint8)
    pred = rng.integers(0, 3, (6, 8, 8)).astype(np.uint8)
    lab = sim.user_labels(pred, truth, [1, 4])
    for z in range(6):
        assert np.array_equal(lab[z], truth[z] if z in (1, 4) else pred[z])
    assert not np.array_equal(pred[1], truth[1])  # the test means something


def test_only_uncorrected_slices_are_scored():
    """Perfect on the corrected slices, empty elsewhere: Dice 0. Scoring the corrected slices
    too would give about 2/3 here."""
    truth = np.zeros((6, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    truth[:, 0, :] = 2
    pred = np.zeros_like(truth)
    corrected = [0, 2, 4]
    pred[corrected] = truth[corrected]
    s = sim.score_uncorrected(pred, truth, corrected, [1, 2])
    assert s["scored"] == [1, 3, 5]
    assert s["dice"] == 0.0 and s["per_class"] == {1: 0.0, 2: 0.0}
    assert sim.score_uncorrected(pred, truth, [], [1, 2])["dice"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="nothing left"):
        sim.score_uncorrected(pred, truth, range(6), [1, 2])


def _row(arm, k, seed, dice):
    return dict(zip(report.ARM, arm, strict=True), k=k, seed=seed, dice=dice)


def test_slices_to_target_from_a_table():
    a, b = ("phantom", "mae", "even", "full"), ("phantom", "random", "even", "full")
    rows = []
    for seed, noise in ((0, -0.02), (1, 0.02)):
        for k, d in ((0, 0.60), (1, 0.70), (2, 0.78), (3, 0.79), (5, 0.83), (10, 0.85)):
            rows.append(_row(a, k, seed, d + noise))
        for k, d in ((0, 0.82), (1, 0.50), (2, 0.70), (3, 0.75), (5, 0.78), (10, 0.79)):
            rows.append(_row(b, k, seed, d + noise))
    rows.append({"dataset": "phantom", "start": "reference", "selection": "all",
                 "mode": "none", "k": 0, "seed": 0, "dice": 0.84})
    cs = report.curves(rows)
    assert cs[a][5]["mean"] == pytest.approx(0.83) and cs[a][5]["std"] == pytest.approx(0.02)
    assert report.slices_to_target(cs[a], 0.80) == 5
    assert report.slices_to_target(cs[a], 0.78) == 2  # the mean, not the best seed
    assert report.slices_to_target(cs[a], 0.90) is None
    assert report.slices_to_target(cs[b], 0.80) == 0  # the starting model already does
    head = {(h["start"]): h for h in report.headline(rows, (0.8, 0.9))}
    assert head["mae"]["to_reference"] == 10 and head["mae"]["to_fixed"] == {"0.80": 5,
                                                                             "0.90": None}
    assert head["random"]["to_reference"] is None and head["random"]["k_max"] == 10
    assert report.targets(rows, [0.8])["phantom"]["reference"] == pytest.approx(0.84)
    table = report.markdown(rows, {"targets": report.targets(rows, [0.8]),
                                   "slices_to_target": report.headline(rows, [0.8])})
    assert "| phantom | mae | even | full | 10 | 5 |" in table
    assert "| phantom | random | even | full | > 10 | 0 |" in table
    assert "| phantom | even | full | -0.220 ± 0.000 [0/2] | +0.200 ± 0.000 [2/2] |" in table
    pd = report.paired_differences(rows)[("phantom", "even", "full")]
    assert pd[5] == {"mean": pytest.approx(0.05), "std": pytest.approx(0.0), "n": 2, "wins": 2}


def test_the_gui_job_trains_on_exactly_the_corrected_slices(tmp_path):
    """correct_and_finetune autosaves the user's labels (truth on k slices) and runs the
    Fine-tune widget's job; the new version's card lists exactly those training slices."""
    from training.interactive.autosave import read_saved
    from training.interactive.simulate_data import load_data, prepare_models
    from training.weights.checkpoint import read_model_card

    ds = load_data("phantom", TINY)
    prepare_models(ds, TINY, tmp_path / "models", progress=False)
    image, truth = ds.volume(0)
    pred = np.zeros_like(truth)
    corrected = sim.choose_slices(len(image), 3, "even", 0)
    new = sim.correct_and_finetune(tmp_path / "models" / "random", image, truth, pred, corrected,
                                   "decoder", 0, TINY, tmp_path / "s", ds.modality, ds.window)
    card = read_model_card(new)
    study = card.provenance["data"]["studies"][0]
    assert study["train_slices"] == corrected and card.provenance["data"]["n_train"] == 3
    assert card.provenance["hyperparameters"]["mode"] == "decoder"
    (saved,) = list((tmp_path / "s" / "autosave").glob("*.npz"))
    s = read_saved(saved)
    assert sorted(s.corrected) == corrected
    for z in range(len(image)):
        assert np.array_equal(s.labels[z], truth[z] if z in corrected else pred[z])


def test_benchmark_rows_outputs_and_resume(tmp_path):
    cfg = dataclasses.replace(TINY, ks=(1, 3))
    rows = sim.run_benchmark(cfg, tmp_path / "out", progress=False)
    runs = [r for r in rows if r["start"] == "random"]
    assert sorted(r["k"] for r in runs) == [0, 1, 3]
    for r in runs:
        corrected = [int(i) for i in r["corrected"].split(";")] if r["corrected"] else []
        assert len(corrected) == r["k"] == r["n_corrected"]
        assert r["n_scored"] == TINY.volume_slices - r["k"]
    assert any(r["start"] == "reference" for r in rows)
    for ext in ("csv", "json", "png"):
        assert (tmp_path / "out" / f"simulated_user.{ext}").stat().st_size > 0
    meta = json.loads((tmp_path / "out" / "simulated_user.json").read_text())
    assert meta["slices_to_target"] and "phantom" in meta["targets"]
    # a rerun with one more k computes only that row; the others are kept as they were
    before = report.read_rows(tmp_path / "out" / "simulated_user.csv")
    sim.run_benchmark(dataclasses.replace(cfg, ks=(1, 2, 3)), tmp_path / "out", progress=False)
    after = report.read_rows(tmp_path / "out" / "simulated_user.csv")
    assert after[:len(before)] == before
    assert [r["k"] for r in after[len(before):]] == [2]
    with pytest.raises(ValueError, match="other settings"):
        sim.run_benchmark(dataclasses.replace(cfg, session_steps=4), tmp_path / "out",
                          progress=False)


def test_cli_writes_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sim, "QUICK", TINY)
    assert sim.main(["--quick", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"),
                     "--threads", "1"]) == 0
    assert "slices to reference" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        "simulated_user.csv", "simulated_user.json", "simulated_user.png", "tables.md"}
    assert sim.main(["--quick", "--out", str(tmp_path / "o"), "--ks", "0"]) == 2
    assert sim.main(["--quick", "--out", str(tmp_path / "o"), "--report-only", "--targets",
                     "0.01"]) == 0
    meta = json.loads((tmp_path / "o" / "simulated_user.json").read_text())
    assert meta["targets"]["phantom"]["fixed"] == [0.01] and meta["starting_models"]["phantom"]
    assert all(h["to_fixed"]["0.01"] == 0 for h in meta["slices_to_target"])
    assert sim.main(["--quick", "--out", str(tmp_path / "empty"), "--report-only"]) == 2


def test_every_cli_option_has_help():
    parser = sim.build_parser()
    missing = [a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing


def test_mae_start_uses_the_pretraining_and_fine_tune_recipes(tmp_path):
    """The MAE start: augmented pretraining with 8-px mask units and normalised targets, its
    input-use check recorded, then the recipe's default transfer for pretrained inits."""
    from training.finetune.recipe import PRETRAINED_DEFAULT
    from training.interactive.simulate_data import load_data, prepare_models
    from training.weights.checkpoint import read_model_card

    cfg = dataclasses.replace(TINY, starts=("mae",))
    info, recipe = prepare_models(load_data("phantom", cfg), cfg, tmp_path, progress=False)
    mae = read_model_card(tmp_path / "mae-pretrained")
    assert mae.task == "mae" and mae.architecture["mask_unit"] == 8
    assert mae.architecture["norm_pix_loss"] is True
    assert "masked-patch error" in info["mae-pretrained"]["input_use_check"]
    assert info["mae"]["recipe"]["transfer"] == PRETRAINED_DEFAULT.transfer
    assert info["mae"]["recipe"]["rescale"] == PRETRAINED_DEFAULT.rescale
    assert recipe["pretrained_default"] == PRETRAINED_DEFAULT.to_dict()
    # kept models are reused, not retrained
    again, _ = prepare_models(load_data("phantom", cfg), cfg, tmp_path, progress=False)
    assert again["mae"]["seconds"] == info["mae"]["seconds"]
