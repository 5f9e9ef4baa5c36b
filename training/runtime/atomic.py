"""Atomic file and directory writes: write to a temporary sibling, then rename.

A crash or a full disk leaves either the old file or the new one, never a
half-written file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results should get the usual permissions (e.g. 0644).
_UMASK = _read_umask()
_FILE_MODE, _DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    ``suffix`` lets writers that pick their format from the extension (``.nii.gz``)
    see it. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with ``suffix`` so format-sniffing writers pick the right format.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``path`` when the block succeeds.

    Without ``overwrite`` the name is *reserved* first with an exclusive ``mkdir``, so two
    writers racing for one name never both succeed and neither ever removes what the other
    committed: the loser gets :class:`FileExistsError` at once. With ``overwrite`` an existing
    ``path`` is replaced (moved aside, then deleted only after the new directory is in place).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reserved = False
    if not overwrite:
        try:
            os.mkdir(path)  # atomic and exclusive: the reservation
        except FileExistsError:
            raise FileExistsError(
                f"{path} already exists (pass overwrite=True to replace it)") from None
        reserved = True
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except BaseException:
        if reserved:
            _remove_reservation(path)
        raise
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)  # mkdtemp makes 0700 folders
        if reserved:
            _commit_onto_reservation(tmp, path)
        else:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if reserved:
            _remove_reservation(path)
        raise


def _commit_onto_reservation(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto our own empty reserved folder ``path``.

    POSIX ``rename`` replaces an empty directory atomically. Where it cannot (Windows), the
    empty reservation is removed first; the name is still ours because nobody else could
    have created it while it existed.
    """
    try:
        os.replace(tmp, path)
    except OSError:
        os.rmdir(path)  # fails (and stops us) if someone put anything into it
        os.replace(tmp, path)


def _remove_reservation(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)  # only ever removes an *empty* folder: never someone's committed work


#: Names of the temporaries :func:`atomic_path` and :func:`atomic_directory` create.
_TEMP_FILE = re.compile(r"^\..+\.tmp-[A-Za-z0-9_]+.*$")
_TEMP_DIR = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$|^\..+\.old-\d+$")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete what interrupted atomic writes left in ``directory`` (not recursive).

    Call it only on folders one writer owns (a run folder at start or resume): a write in
    progress by another process there would lose its temporary. Returns what was removed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        try:
            if p.is_symlink():
                continue
            if p.is_file() and _TEMP_FILE.match(p.name):
                p.unlink()
            elif p.is_dir() and _TEMP_DIR.match(p.name):
                shutil.rmtree(p)
            else:
                continue
        except OSError:
            continue
        removed.append(p)
    return removed


def no_space_left(error: BaseException, path: str | os.PathLike) -> bool:
    """Whether ``error`` (an OSError, or torch's RuntimeError from a failed write) means the
    disk holding ``path`` is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    if "no space left" in text or "disk quota" in text:
        return True
    torch_write = "file write failed" in text or "unexpected pos" in text
    if isinstance(error, RuntimeError) and torch_write:
        return True
    try:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free < (1 << 20)
    except OSError:
        return False


def check_writable(directory: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise :class:`PermissionError` naming ``directory`` unless a file can be created in it
    (the folder is created when missing). Call it *before* long work that ends in a save."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = "no space left" if no_space_left(e, directory) else (e.strerror or str(e))
        raise PermissionError(f"{what} {directory} is not writable ({reason})") from None
    return directory


def safe_component(text: str, fallback: str = "item", max_len: int = 120) -> str:
    """``text`` as one safe path component: letters, digits, ``.``, ``_`` and ``-`` only, never
    ``.``/``..`` or a hidden name, never empty, at most ``max_len`` characters."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")[:max_len].strip("-.")
    return out or fallback
