"""Data preparation: a mixed tree -> shards + manifest; resumable; feeds pretraining end to end."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from training.data.preprocessing import Preprocessing
from training.models import build_model
from training.pretrain import prepare as prep_mod
from training.pretrain.data import ShardDataset
from training.pretrain.prepare import prepare
from training.weights.checkpoint import init_from_checkpoint, read_model_card

from ..io.factory import make_series
from .conftest import BASE, read_losses, run_pretrain


@pytest.fixture
def mixed_tree(tmp_path):
    src = tmp_path / "src"
    make_series(src / "ct", n=6, rows=40, cols=40, modality="CT", window=(300, 1000), intercept=0.0)
    make_series(src / "mr", n=4, rows=32, cols=48, modality="MR", window=None, intercept=0.0)
    vol = np.random.default_rng(0).normal(100, 20, (32, 32, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), src / "scan.nii.gz")
    from skimage.io import imsave
    imsave(src / "xray.png", (np.random.default_rng(1).random((50, 70)) * 255).astype(np.uint8),
           check_contrast=False)
    (src / "ct" / "notes.txt").write_text("ignored")
    (src / "corrupt.dcm").write_bytes(b"DICM" * 10)
    return src


def test_mixed_tree_to_shards(mixed_tree, tmp_path):
    out = tmp_path / "shards"
    header = Preprocessing(ct_window=None)  # each file's own window (the CT series: 300/1000)
    m = prepare(mixed_tree, out, size=32, shard_size=5, workers=1, prep=header)
    assert m["preprocessing"] == Preprocessing(input_size=32, ct_window=None).to_dict()
    assert m["counts_per_modality"] == {"CT": 6, "MR": 4, "OT": 4}  # NIfTI 3 + PNG 1: "OT"
    assert m["total_images"] == 14 == sum(s["count"] for s in m["shards"])
    assert [s["path"].endswith("corrupt.dcm") for s in m["skipped"]] == [True]
    assert m["skipped"][0]["reason"]
    ds = ShardDataset(out)
    assert len(ds) == 14
    x, noise, ok = ds[(3, 0)]
    assert x.shape == (1, 32, 32) and ok and 0 <= x.min() and x.max() <= 1 and noise.shape == (196,)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == m


def test_default_ct_window_is_the_model_card_default(mixed_tree, tmp_path):
    m = prepare(mixed_tree, tmp_path / "shards", size=32, shard_size=5)
    # HU k*100 + 0..96 through 40/400 ([-160, 240] HU): slices 3-5 are all white, so blank
    assert m["counts_per_modality"]["CT"] == 3
    assert Preprocessing.from_dict(m["preprocessing"]) == Preprocessing(input_size=32)
    with pytest.raises(SystemExit, match="other preprocessing"):  # resuming with other options
        prepare(mixed_tree, tmp_path / "shards", size=32, prep=Preprocessing(ct_window=None))


def test_shards_without_recorded_preprocessing_say_what_is_assumed(mixed_tree, tmp_path, caplog):
    out = tmp_path / "shards"
    prepare(mixed_tree, out, size=32, shard_size=5)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["preprocessing"]  # as written by the prepare of before
    (out / "manifest.json").write_text(json.dumps(manifest))
    ds = ShardDataset(out)
    assert ds.prep == Preprocessing(input_size=32, ct_window=None, percentile_scope="volume")
    assert "does not record its preprocessing" in caplog.text


def test_interrupted_prepare_resumes_without_redoing_files(mixed_tree, tmp_path, monkeypatch):
    full = prepare(mixed_tree, tmp_path / "full", size=32, shard_size=5)
    calls = []
    real = prep_mod.process_file

    def flaky(path, *a):
        calls.append(path)
        if len(calls) == 5:  # sources: scan.nii.gz, xray.png, corrupt.dcm, ct/, mr/
            raise KeyboardInterrupt
        return real(path, *a)
    monkeypatch.setattr(prep_mod, "process_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(mixed_tree, tmp_path / "part", size=32, shard_size=5)
    first_pass = len(calls)
    done = {s for sh in json.loads((tmp_path / "part" / "manifest.json").read_text())["shards"]
            for s in sh["sources"]}
    assert done  # finished shards survived the interruption
    calls.clear()
    resumed = prepare(mixed_tree, tmp_path / "part", size=32, shard_size=5)
    assert not done & set(calls)  # no finished file was read again
    assert first_pass + len(calls) > len(calls)
    assert resumed["total_images"] == full["total_images"]
    assert resumed["counts_per_modality"] == full["counts_per_modality"]


def test_prepare_pretrain_export_segment(mixed_tree, tmp_path):
    shards = tmp_path / "shards"
    prepare(mixed_tree, shards, size=64, shard_size=8, prep=Preprocessing(ct_window=None))
    run = tmp_path / "run"
    run_pretrain(BASE + ["--data", str(shards), "--output", str(run), "--epochs", "2",
                         "--batch-size", "4"])
    assert len(read_losses(run)) == 6
    seg = build_model("segmentation", "tiny", num_classes=2, img_size=64)
    report = init_from_checkpoint(seg, run / "model")
    assert report.loaded and not report.mismatched
    # the exported card records exactly the preprocessing the shards were made with
    card = read_model_card(run / "model")
    assert card.prep == Preprocessing(input_size=64, ct_window=None)


def test_cli_reports_and_rejects_bad_window(mixed_tree, tmp_path, capsys):
    assert prep_mod.main([str(mixed_tree), str(tmp_path / "o"), "--size", "32", "--workers", "2",
                          "--ct-window", "bone"]) == 0
    assert "skipped 1 files" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        prep_mod.main([str(mixed_tree), str(tmp_path / "o2"), "--ct-window", "40,-1"])
