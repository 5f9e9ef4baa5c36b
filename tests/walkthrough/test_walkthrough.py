"""The scripted walk-through (tests/walkthrough/walkthrough.py) in a fresh process with
nothing pre-imported, under the test session's X server (Xvfb in CI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_vismae._models import BUILTIN_DIR

pytestmark = [pytest.mark.gui, pytest.mark.slow,
              pytest.mark.skipif(not (BUILTIN_DIR / "abdomen-organs").is_dir(),
                                 reason="built-in models not built")]
ROOT = Path(__file__).resolve().parents[2]


def test_walkthrough(tmp_path):
    out = tmp_path / "screenshots"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "NAPARI_VISMAE_MODELS": str(tmp_path / "models"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "walkthrough" / "walkthrough.py"),
                          str(out)], env=env, capture_output=True, text=True, timeout=280,
                         cwd=tmp_path)
    print(run.stdout[-4000:])
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and not summary["errors"]
    shots = sorted(p.name for p in out.glob("*.png"))
    assert len(shots) == 7, shots
    print("largest GUI stall per step (s):", summary["stalls"])
