"""Issue 13, run folders: leftovers of interrupted writes removed, one run per folder, an
append-only log that survives a torn line and logs exact means across a resume, a full disk
named as such, and missing shards refused."""
from __future__ import annotations

import json
import signal
import sys
import textwrap

import numpy as np
import pytest

from training.pretrain.data import MANIFEST, SHARD_FORMAT, open_dataset
from training.pretrain.resume import load_state

from .conftest import BASE, REPO, read_losses, run_pretrain


def test_kill_leftovers_torn_log_and_exact_means_across_resume(image_folder, tmp_path):
    """Before: .step-*.pt.tmp-* files survived a resume; a torn last metrics line made
    --resume auto fail with 'Unterminated string' and no file name; the first mean logged
    after a resume divided the loss since the resume by the whole window (3.52 vs 4.40)."""
    common = BASE + ["--data", str(image_folder), "--epochs", "2", "--batch-size", "4",
                     "--save-every", "3", "--log-every", "4"]
    full, broken = tmp_path / "full", tmp_path / "broken"
    run_pretrain(common + ["--output", str(full)])
    killed = run_pretrain(common + ["--output", str(broken), "--kill-after-step", "7"],
                          check=False)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (broken / "checkpoints").iterdir())[-1] == "step-000000006.pt"
    # what a kill in the middle of writes leaves behind
    junk = [broken / "checkpoints" / ".step-000000009.pt.tmp-k1ll3d", broken / ".model.ab12cd.tmp",
            broken / "samples" / ".step-000000009.png.tmp-x7y8z9.png"]
    junk[0].write_bytes(b"\0" * 1000)
    junk[1].mkdir()
    (junk[1] / "model.safetensors").write_bytes(b"half")
    junk[2].parent.mkdir(exist_ok=True)
    junk[2].write_bytes(b"png")
    with open(broken / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "epoch": 1, "lo')  # torn by the kill
    run_pretrain(common + ["--output", str(broken), "--resume", "auto"])
    assert not any(p.exists() for p in junk)
    assert read_losses(broken) == read_losses(full)  # step 8's mean spans the resume exactly
    assert [s for s, _ in read_losses(broken)] == [4, 8, 12]


def test_a_second_run_into_a_used_folder_is_refused_unless_overwrite(image_folder, tmp_path):
    """Before: rerunning without --resume wiped metrics.jsonl, overwrote model/, kept the old
    states, and a later --resume auto continued the old run."""
    run = tmp_path / "run"
    args = BASE + ["--data", str(image_folder), "--output", str(run), "--epochs", "1",
                   "--batch-size", "8"]
    run_pretrain(args)
    log_before = (run / "metrics.jsonl").read_bytes()
    proc = run_pretrain(args + ["--seed", "5"], check=False)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "--resume auto" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / "metrics.jsonl").read_bytes() == log_before
    run_pretrain(args + ["--seed", "5", "--overwrite"])
    states = sorted((run / "checkpoints").iterdir())
    assert load_state(states[-1])["config"]["seed"] == 5
    assert all(load_state(s)["config"]["seed"] == 5 for s in states)


FULL_DISK = textwrap.dedent("""
    import errno, sys, torch
    from training.pretrain import outputs
    from training.pretrain.loop import main
    mode, argv = sys.argv[1], sys.argv[2:]
    calls = {"save": 0, "log": 0}
    real_save, real_write = torch.save, outputs.MetricsLog.write
    def save(*a, **k):
        calls["save"] += 1
        if mode == "state" and calls["save"] >= 2:
            real_save(*a, **k)  # the bytes go out, then the disk fills up like torch reports it
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                               "failed writing file data/7: file write failed")
        return real_save(*a, **k)
    def write(self, record):
        calls["log"] += 1
        if mode == "log" and calls["log"] >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_write(self, record)
    torch.save, outputs.MetricsLog.write = save, write
    sys.exit(main(argv))
""")


@pytest.mark.parametrize("mode", ["state", "log"])
def test_full_disk_is_named_and_the_last_good_state_stays(image_folder, tmp_path, mode):
    """Before: a full disk killed pretraining with a raw RuntimeError that never mentioned
    the disk."""
    import os
    import subprocess
    run = tmp_path / "run"
    args = BASE + ["--data", str(image_folder), "--output", str(run), "--epochs", "2",
                   "--batch-size", "8", "--save-every", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, mode, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "no space left on" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    states = sorted((run / "checkpoints").iterdir())
    assert states and all(not p.name.startswith(".") for p in states)
    assert load_state(states[0])["global_step"] == 2
    if mode == "log":
        assert proc.returncode == 2 and "the last good training state" in proc.stderr
    else:
        assert proc.returncode == 0 and [p.name for p in states] == ["step-000000002.pt"]


def _manifest(root, files):
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps({
        "format": SHARD_FORMAT, "image_size": 64,
        "shards": [{"file": f, "count": 4} for f in files]}))


def test_missing_or_escaping_shards_are_refused(tmp_path):
    """Before: with every shard missing, pretraining trained on zeros, exited 0 and exported
    a model; a manifest could point outside its folder."""
    _manifest(tmp_path / "gone", ["shard-000.npy", "shard-001.npy"])
    with pytest.raises(ValueError, match="2 of 2 shards are missing") as info:
        open_dataset(tmp_path / "gone", 64, 16, 0)
    assert MANIFEST in str(info.value)
    np.save(tmp_path / "outside.npy", np.zeros((4, 64, 64), np.uint8))
    _manifest(tmp_path / "esc", ["../outside.npy"])
    with pytest.raises(ValueError, match="must stay inside"):
        open_dataset(tmp_path / "esc", 64, 16, 0)
    proc = run_pretrain(BASE + ["--data", str(tmp_path / "gone"), "--output",
                                str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2"],
                        check=False)
    assert proc.returncode == 2 and "shards are missing" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()
