"""The fine-tune job: one path for the GUI's spawned child and the headless CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training.interactive import finetune as job
from training.interactive.autosave import Autosave, work_dir_for
from training.interactive.corrections import CorrectionSet
from training.interactive.session import SessionConfig

from .conftest import CORRECTED

ROOT = Path(__file__).resolve().parents[2]


def _job(ft_store, study, tmp_path, steps=4):
    vol, lab = study
    base = next(e for e in ft_store.list() if e.name == "weak-tiny-seg")
    cs = CorrectionSet(vol, lab, corrected=set(CORRECTED), modality="CT", window=(40.0, 400.0))
    saved = Autosave(work_dir_for(ft_store.user_dir)).save(cs)
    cfg = SessionConfig(steps=steps, val_every=2, batch_size=2).to_dict()
    return job.write_job(tmp_path / "job", base.path, ft_store.user_dir, cfg, [{
        "autosave": saved, "image": vol, "slices": sorted(CORRECTED), "key": cs.key,
        "modality": "CT", "window": [40.0, 400.0]}]), saved


def test_cli_runs_the_job_and_prints_events(ft_store, study, tmp_path):
    work, _ = _job(ft_store, study, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "training.interactive.finetune", "--work",
                          str(work)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["kind"] == "start" and events[-1]["kind"] == "result"
    result = json.loads((work / "result.json").read_text())
    assert result == events[-1] and result["validation"] == "k-fold" and result["n_val"] == 3
    entry = Path(result["entry"])
    assert entry.parent.parent == ft_store.user_dir.resolve() or entry.parent.parent == \
        ft_store.user_dir
    prov = json.loads((entry / "model_card.json").read_text())["provenance"]
    assert sorted(prov["data"]["studies"][0]["train_slices"]) == list(CORRECTED)  # study index
    assert prov["data"]["studies"][0]["shape"] == list(study[0].shape)


def test_cli_refuses_a_missing_job(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "training.interactive.finetune", "--work",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "job.json" in out.stderr


def test_validation_studies_replace_cross_validation(ft_store, study, tmp_path):
    vol, lab = study
    base = next(e for e in ft_store.list() if e.name == "weak-tiny-seg")
    cs = CorrectionSet(vol, lab, corrected=set(CORRECTED), modality="CT")
    saved = Autosave(work_dir_for(ft_store.user_dir)).save(cs)
    st = {"autosave": saved, "image": vol, "key": cs.key, "modality": "CT", "window": None}
    work = job.write_job(tmp_path / "job", base.path, ft_store.user_dir,
                         SessionConfig(steps=2, val_every=2, batch_size=2).to_dict(),
                         [{**st, "slices": sorted(CORRECTED)}],
                         val_studies=[{**st, "slices": [0, 6, 11]}])
    events = []
    result = job.run_job(work, events.append)
    assert result["validation"] == "given" and result["n_val"] == 3
    assert [e["n_train"] for e in events if e["kind"] == "start"] == [3]
    assert not any(e["kind"] == "phase" and e["phase"] == "fold" for e in events)


def test_the_child_does_not_rerun_an_unguarded_main_script(tmp_path):
    """A napari script without ``if __name__ == '__main__'`` must not run again (a second
    napari) in the spawned child."""
    script = tmp_path / "user_script.py"
    script.write_text(
        "print('MAIN RAN', flush=True)\n"
        "from training.interactive import finetune as job\n"
        f"proc, conn, stop = job.start({str(tmp_path / 'no-job')!r})\n"
        "assert conn.poll(120)\n"
        "print(conn.recv()['kind'], flush=True)\n"
        "proc.join(30)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("MAIN RAN") == 1 and "error" in out.stdout, out.stdout
