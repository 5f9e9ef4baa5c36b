"""Atomic writes: a failure leaves the previous content and no temporary files."""
from __future__ import annotations

import pytest

from training.runtime.atomic import atomic_directory, atomic_path, atomic_write_text


def test_replaces_content(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failure_keeps_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_directory_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("x")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []
