"""First ten minutes: `napari-vismae --help` lists every command, a missing display is explained,
and `headless-demo` runs a built-in model on the sample study and says what it wrote."""
from __future__ import annotations

import json

import nibabel as nib
import pytest

from napari_vismae.__main__ import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS) and "xvfb-run -a" in out


def test_missing_display_says_how_to_run_headless(monkeypatch, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "xvfb-run -a napari-vismae demo --screenshot" in err and "headless-demo" in err


def test_headless_demo_segments_the_sample_with_the_builtin_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["headless-demo", "--output", str(out), "--slices", "12"]) == 0
    printed = capsys.readouterr().out
    assert "abdomen-organs (segmentation)" in printed and "Dice against the true labels" in printed
    for name in ("labels.nii.gz", "overlay.png", "metrics.json"):
        assert str(out / name) in printed and (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_dice"] > 0.5  # a trained model, not random weights
    assert nib.load(out / "labels.nii.gz").shape == (256, 256, 12)


def test_headless_demo_classifier_and_bad_model(tmp_path, capsys):
    assert main(["headless-demo", "--model", "liver-lesion", "--output", str(tmp_path / "c"),
                 "--slices", "6"]) == 0
    assert "study decision" in capsys.readouterr().out
    assert (tmp_path / "c" / "probabilities.csv").is_file()
    assert main(["headless-demo", "--model", "no-such-model", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "abdomen-organs" in err


@pytest.mark.parametrize("argv", [["headless-demo", "--help"], ["demo", "--help"]])
def test_command_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
