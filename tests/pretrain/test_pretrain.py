"""Headless pretraining: learns, resumes exactly after SIGKILL, DDP matches one process."""
from __future__ import annotations

import json
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file

from training.models import build_model
from training.pretrain.loop import build_parser, parse_args
from training.weights.checkpoint import init_from_checkpoint, load_checkpoint

from .conftest import BASE, read_losses, run_pretrain


def test_loss_decreases_and_weights_are_exported(image_folder, tmp_path):
    run = tmp_path / "run"
    # without augmentation (flips only): on 24 images the loss must fall clearly in 36 steps
    run_pretrain(BASE + ["--data", str(image_folder), "--output", str(run), "--epochs", "12",
                         "--batch-size", "8", "--vis-every", "9", "--no-augment"])
    losses = [loss for _, loss in read_losses(run)]
    assert len(losses) == 36
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.8 * first, f"loss did not fall enough: {first:.4f} -> {last:.4f}"
    model, card = load_checkpoint(run / "model")
    assert card.task == "mae" and card.provenance["pretraining"]["steps"] == 36
    assert card.provenance["pretraining"]["augmentation"] == {"flip": True}
    check = card.provenance["pretraining"]["input_use_check"]
    assert check["step"] == 36 and not check["held_out"] and check["images"] == 16
    assert check["masked_error"] > 0 and check["all_masked_error"] > 0
    assert card.preprocessing["mean"] == pytest.approx(0.223)
    assert (run / "samples" / "step-000000009.png").read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_files"] >= 0 and "images_per_s" in records[0]
    assert sum(r["skipped_files"] for r in records) >= 1  # the corrupt PNG was met and counted


def test_sigkill_then_resume_gives_the_uninterrupted_losses(image_folder, tmp_path):
    # default augmentation on; the input-use check runs every 4 steps and must not perturb it
    common = BASE + ["--data", str(image_folder), "--epochs", "3", "--batch-size", "4",
                     "--save-every", "2", "--check-every", "4"]
    full, broken = tmp_path / "full", tmp_path / "broken"
    run_pretrain(common + ["--output", str(full)])
    killed = run_pretrain(common + ["--output", str(broken), "--kill-after-step", "9"], check=False)
    assert killed.returncode == -signal.SIGKILL
    states = sorted(p.name for p in (broken / "checkpoints").iterdir())
    assert states[-1] == "step-000000008.pt"  # mid-epoch (6 steps per epoch)
    run_pretrain(common + ["--output", str(broken), "--resume", "auto"])
    assert read_losses(broken) == read_losses(full)
    checks = [json.loads(x) for x in (full / "check.jsonl").read_text().splitlines()]
    assert [c["step"] for c in checks] == [4, 8, 12, 16, 18]
    assert (broken / "check.jsonl").read_text() == (full / "check.jsonl").read_text()
    a, b = (load_file(r / "model" / "model.safetensors") for r in (full, broken))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_an_incompatible_checkpoint(image_folder, tmp_path):
    run = tmp_path / "run"
    args = BASE + ["--data", str(image_folder), "--output", str(run), "--batch-size", "8"]
    run_pretrain(args + ["--epochs", "1"])
    proc = run_pretrain(args + ["--epochs", "2", "--resume", "auto", "--mask-ratio", "0.5"],
                        check=False)
    assert proc.returncode != 0 and "model differs" in proc.stderr and "mask_ratio" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo torchrun test runs on Linux CI")
def test_two_process_ddp_equals_one_process_with_double_batch(image_folder, tmp_path):
    common = BASE + ["--data", str(image_folder), "--epochs", "2", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_pretrain(common + ["--output", str(one), "--batch-size", "8"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2"]
    run_pretrain(common + ["--output", str(two), "--batch-size", "4"], launcher=torchrun)
    l1, l2 = read_losses(one), read_losses(two)
    assert [s for s, _ in l1] == [s for s, _ in l2] and len(l1) == 6
    for (_, a), (_, b) in zip(l1, l2, strict=True):
        assert abs(a - b) < 1e-4
    w1, w2 = (load_file(r / "model" / "model.safetensors") for r in (one, two))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-4, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_failed_save_keeps_previous_state(tmp_path, monkeypatch):
    from training.pretrain import resume
    state = {"model": {}, "optimizer": {}, "global_step": 1, "epoch": 0, "config": {}}
    first = resume.save_state(tmp_path, state, keep_last=3)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(resume.torch, "save", full_disk)
    assert resume.save_state(tmp_path, dict(state, global_step=2), keep_last=3) is None
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    assert resume.load_state(first)["global_step"] == 1


def test_pretrained_mae_initialises_segmentation(image_folder, tmp_path):
    run = tmp_path / "run"
    run_pretrain(BASE + ["--data", str(image_folder), "--output", str(run), "--epochs", "1",
                         "--batch-size", "8"])
    seg = build_model("segmentation", "tiny", num_classes=3, img_size=64)
    report = init_from_checkpoint(seg, run / "model")
    mae, _ = load_checkpoint(run / "model")
    assert not report.mismatched and len(report.loaded) > 100
    torch.testing.assert_close(seg.layers_up[2].blocks[1].mlp.fc2.weight,
                               mae.layers_up[2].blocks[1].mlp.fc2.weight)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ["--data", "--output", "--model", "--epochs", "--batch-size", "--lr",
                 "--warmup-epochs", "--mask-ratio", "--resume", "--config", "--device",
                 "--precision", "--seed", "--num-workers", "--accum-steps", "--clip-grad",
                 "--compile", "torchrun"]:
        assert flag in text, flag
    assert "--kill-after-step" not in text


def test_yaml_config_and_flag_override(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("data: /data/shards\nbatch-size: 32\nlr: 0.001\nmodel: small\n")
    cfg = parse_args(["--config", str(cfg_file), "--lr", "3e-4"])
    assert (cfg.data, cfg.batch_size, cfg.lr, cfg.model) == ("/data/shards", 32, 3e-4, "small")
    cfg_file.write_text("learning_rate: 1\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(cfg_file)])


def test_missing_data_is_a_clear_error(tmp_path):
    proc = run_pretrain(["--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
                        check=False)
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr
