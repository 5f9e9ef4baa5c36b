"""Every phantom seed of the label-efficiency study is selectable, and recorded."""
from __future__ import annotations

import json

from training.finetune.label_efficiency import StudyConfig, build_parser, main, run_study


def test_cli_selects_every_phantom_seed_and_the_variation():
    a = build_parser().parse_args(["--quick", "--out", "o", "--pretrain-seed", "11",
                                   "--labeled-seed", "12", "--val-seed", "13", "--test-seed",
                                   "14", "--phantoms", "hard", "--seeds", "5", "6"])
    assert (a.pretrain_seed, a.labeled_seed, a.val_seed, a.test_seed) == (11, 12, 13, 14)
    assert a.phantoms == "hard" and a.seeds == [5, 6]


def test_equal_phantom_seeds_are_refused(tmp_path, capsys):
    assert main(["--quick", "--datasets", "phantoms", "--out", str(tmp_path), "--val-seed",
                 "4", "--threads", "1"]) == 2
    assert "seeds must differ" in capsys.readouterr().err


def test_study_uses_the_seeds_it_is_given(tmp_path):
    cfg = StudyConfig(preset="tiny", input_size=64, fractions=(1.0,), seeds=(3,), n_unlabeled=8,
                      n_labeled=4, n_val=2, n_test=2, pretrain_steps=1, pretrain_batch=4,
                      finetune_steps=1, finetune_batch=4, evals=1, pretrain_seed=21,
                      labeled_seed=22, val_seed=23, test_seed=24, phantoms="hard")
    rows = run_study(cfg, tmp_path, progress=False)
    meta = json.loads((tmp_path / "label_efficiency.json").read_text())
    assert "variation 'hard'" in meta["data"]["phantoms"]
    assert "21/22/23/24" in meta["data"]["phantoms"]
    assert meta["config"]["labeled_seed"] == 22
    assert {r["seed"] for r in rows} == {3}
