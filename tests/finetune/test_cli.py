import json
import subprocess
import sys

import pytest

from training.finetune import cli as finetune
from training.finetune import evaluate


@pytest.mark.parametrize("module", ["training.finetune", "training.evaluate",
                                    "training.label_efficiency"])
def test_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout
    if module == "training.finetune":
        for opt in ("--mode", "--init", "--csv-dir", "--images", "--synthetic", "--resume",
                    "--ce-weight", "--class-names"):
            assert opt in out.stdout


def test_finetune_then_evaluate_cli(tmp_path, capsys):
    run = tmp_path / "run"
    rc = finetune.main(["--task", "segmentation", "--synthetic", "12", "--synthetic-size", "64",
                        "--preset", "tiny", "--input-size", "64", "--epochs", "1",
                        "--batch-size", "4", "--out", str(run), "--no-progress",
                        "--device", "cpu"])
    assert rc == 0 and (run / "best" / "model_card.json").is_file()
    card = json.loads((run / "best" / "model_card.json").read_text())
    assert [c["name"] for c in card["classes"]][1] == "liver"
    assert card["preprocessing"]["modality"] == "CT"
    rc = evaluate.main(["--checkpoint", str(run / "best"), "--synthetic", "6",
                        "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert rc == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["num_images"] == 6 and 0 <= m["mean_dice"] <= 1
    for f in ("per_class.csv", "confusion_matrix.csv", "per_image.csv"):
        assert (tmp_path / "eval" / f).is_file()
    assert "mean Dice" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, capsys):
    rc = finetune.main(["--task", "segmentation", "--num-classes", "3",
                        "--out", str(tmp_path / "x"), "--preset",
                        "tiny"])
    assert rc == 2 and "data source" in capsys.readouterr().err
    rc = finetune.main(["--task", "segmentation", "--train-csv", str(tmp_path / "no.csv"),
                        "--num-classes", "3", "--out", str(tmp_path / "x")])
    assert rc == 2 and "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_cross_validation_cli(tmp_path):
    rc = evaluate.main(["--cv", "3", "--task", "classification", "--synthetic", "18",
                        "--preset", "tiny", "--input-size", "64", "--epochs", "1",
                        "--batch-size", "6", "--out", str(tmp_path / "cv"), "--no-progress",
                        "--device", "cpu"])
    assert rc == 0
    s = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert s["k"] == 3 and len(s["folds"]) == 3
    assert sum(f["n_test"] for f in s["folds"]) == 18
    assert (tmp_path / "cv" / "folds.csv").is_file()


def test_label_efficiency_smoke(tmp_path):
    from training.finetune.label_efficiency import StudyConfig, run_study
    cfg = StudyConfig(preset="tiny", input_size=64, fractions=(0.5, 1.0), n_unlabeled=16,
                      n_labeled=8, n_val=4, n_test=4, pretrain_steps=3, pretrain_batch=4,
                      finetune_steps=2, finetune_batch=4, evals=1)
    rows = run_study(cfg, tmp_path, progress=False)
    assert len(rows) == 4 and {r["init"] for r in rows} == {"mae", "random"}
    assert [r["n_labeled"] for r in rows] == [4, 4, 8, 8]
    for f in ("label_efficiency.csv", "label_efficiency.png", "label_efficiency.json"):
        assert (tmp_path / f).is_file()
