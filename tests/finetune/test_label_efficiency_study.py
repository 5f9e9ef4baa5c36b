"""The label-efficiency study on a tiny configuration: paired table, resume, arms, MNI152."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch

from training.finetune.label_efficiency import StudyConfig, paired_tests, run_study
from training.finetune.label_efficiency.config import QUICK
from training.finetune.label_efficiency.study import ROWS, read_rows
from training.finetune.recipe import PAPER, PRETRAINED_DEFAULT

TINY = dict(preset="tiny", input_size=64, n_unlabeled=8, n_labeled=8, n_val=2, n_test=2,
            pretrain_steps=2, pretrain_batch=4, finetune_steps=1, finetune_batch=4, evals=1)


def test_tiny_study_pairs_arms_per_seed_and_resumes(tmp_path):
    cfg = StudyConfig(fractions=(0.25, 1.0), seeds=(0, 1), arms=("mae", "random", "paper"),
                      **TINY)
    rows = run_study(cfg, tmp_path / "out", tmp_path / "work", progress=False)
    assert len(rows) == 2 * 2 * 3
    # the same label subset per seed for every arm; nested fractions
    for seed in (0, 1):
        n = {(r["arm"], r["percent"]) for r in rows if r["seed"] == seed}
        assert len(n) == 6
        sizes = {r["percent"]: r["n_labeled"] for r in rows if r["seed"] == seed}
        assert sizes == {25: 2, 100: 8}
    mae = next(r for r in rows if r["arm"] == "mae")
    paper = next(r for r in rows if r["arm"] == "paper")
    assert mae["transfer"] == PRETRAINED_DEFAULT.transfer and paper["transfer"] == PAPER.transfer
    assert next(r for r in rows if r["arm"] == "random")["transfer"] is None
    # outputs: the CSV holds every row; the table pairs each arm with random init
    with open(tmp_path / "out" / "label_efficiency.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    table = (tmp_path / "out" / "label_efficiency_table.md").read_text()
    assert "| phantoms | mae | 25 % |" in table and "paired t p" in table
    meta = json.loads((tmp_path / "out" / "label_efficiency.json").read_text())
    t = [x for x in meta["paired_tests"] if x["arm"] == "mae" and x["percent"] == 100][0]
    a = [r["mean_dice"] for r in sorted(rows, key=lambda r: r["seed"])
         if r["arm"] == "mae" and r["percent"] == 100]
    b = [r["mean_dice"] for r in sorted(rows, key=lambda r: r["seed"])
         if r["arm"] == "random" and r["percent"] == 100]
    assert t["n"] == 2 and t["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert meta["pretraining"]["phantoms"]["check"]["all_masked_error"] > 0
    assert (tmp_path / "out" / "label_efficiency.png").stat().st_size > 1000
    # resume: nothing is recomputed, one more seed adds only its rows
    before = len(read_rows(tmp_path / "work" / ROWS))
    run_study(cfg, tmp_path / "out", tmp_path / "work", progress=False)
    assert len(read_rows(tmp_path / "work" / ROWS)) == before
    more = StudyConfig(**{**cfg.to_dict(), "seeds": (0, 1, 2), "fractions": (0.25, 1.0)})
    run_study(more, tmp_path / "out", tmp_path / "work", progress=False)
    assert len(read_rows(tmp_path / "work" / ROWS)) == before + 6
    # report only: an arm without finished runs is left out, nothing is trained
    extra = StudyConfig(**{**more.to_dict(), "arms": ("mae", "random", "encoder")})
    rows = run_study(extra, tmp_path / "rep", tmp_path / "work", progress=False,
                     report_only=True)
    assert len(rows) == 12 and len(read_rows(tmp_path / "work" / ROWS)) == before + 6


def test_paired_tests_pair_by_seed():
    rows = []
    for seed, (m, r) in enumerate([(0.8, 0.7), (0.6, 0.55), (0.9, 0.7), (0.5, 0.52),
                                   (0.7, 0.6)]):
        rows += [{"dataset": "d", "arm": "mae", "percent": 10, "seed": seed, "mean_dice": m},
                 {"dataset": "d", "arm": "random", "percent": 10, "seed": seed, "mean_dice": r}]
    from scipy import stats
    (t,) = paired_tests(rows)
    assert t["wins"] == 4 and t["n"] == 5
    m = [0.8, 0.6, 0.9, 0.5, 0.7]
    r = [0.7, 0.55, 0.7, 0.52, 0.6]
    assert t["t_p"] == pytest.approx(stats.ttest_rel(m, r).pvalue)
    assert t["wilcoxon_p"] == pytest.approx(stats.wilcoxon(m, r).pvalue)
    assert t["t_p"] != pytest.approx(stats.ttest_ind(m, r).pvalue)  # paired, not independent


def test_quick_preset_covers_the_protocol():
    assert QUICK.fractions == (0.01, 0.05, 0.10, 0.25, 0.50, 1.00)
    assert len(QUICK.seeds) >= 5 and set(QUICK.datasets) == {"phantoms", "mni152"}
    assert {"mae", "random"} <= set(QUICK.arms)


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                    reason="nilearn (ships the MNI152 template) is not installed")
def test_mni_arm_runs_and_pretrains_only_on_training_slices(tmp_path):
    from training.data.mni152 import mni152_slices
    from training.finetune.label_efficiency.data import mni_data

    cfg = StudyConfig(datasets=("mni152",), fractions=(0.05,), seeds=(0,),
                      arms=("mae", "random"), **TINY)
    d = mni_data(cfg)
    train_img, _ = mni152_slices("train")
    assert d.unlabeled.shape[0] == len(d.pool) == len(train_img)
    test = torch.stack([d.test[i][0] for i in range(len(d.test))])
    dist = torch.cdist(test.flatten(1), d.unlabeled.flatten(1))
    assert float(dist.min()) > 1.0  # no test slice is in the pretraining pool
    rows = run_study(cfg, tmp_path, progress=False)
    assert {r["dataset"] for r in rows} == {"mni152"} and len(rows) == 2
    assert rows[0]["n_labeled"] == 3  # ceil(5 % of 60)
    assert "dice_grey matter" in rows[0] and "dice_white matter" in rows[0]
