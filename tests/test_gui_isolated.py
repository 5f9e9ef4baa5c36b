"""Every GUI test file, alone in a fresh Python process, as a user's napari session starts.

``python -m pytest`` (the README's command) collects this runner and deselects the GUI tests in
its own process (``tests/conftest.py``); each file then runs here in a child, so no file passes
only because an earlier one imported something first.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GUI_CHILD_ENV

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GUI_MARK = re.compile(r"pytest\.mark\.gui\b")
GUI_FILES = sorted(p for p in TESTS.rglob("test_*.py")
                   if p.name != Path(__file__).name and GUI_MARK.search(p.read_text()))


def test_gui_files_are_found():
    assert len(GUI_FILES) >= 5, [str(p) for p in GUI_FILES]


@pytest.mark.gui
@pytest.mark.parametrize("path", GUI_FILES, ids=[str(p.relative_to(TESTS)) for p in GUI_FILES])
def test_gui_file_alone(path: Path):
    env = {**os.environ, GUI_CHILD_ENV: "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gui",
           str(path.relative_to(ROOT))]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    tail = (out.stdout + out.stderr)[-6000:]
    assert out.returncode == 0, f"{' '.join(cmd[2:])} exited {out.returncode}:\n{tail}"
    assert re.search(r"\d+ passed", out.stdout), tail
