"""Limits the readers enforce *before* allocating: declared sizes against the file's size
and a ceiling, and only regular files inside the folder being read.

A header is a promise, not a fact: a 39 KB DICOM can declare a million frames, a 7.8 KB RLE
file 65535² pixels, a 4 MB ``.nii.gz`` 9 GB of voxels. Every reader checks what the header
declares here first and refuses with :class:`ImageReadError` naming the file and the numbers.

The ceiling on one decoded image is ``$NAPARI_VISMAE_MAX_IMAGE_BYTES`` (bytes; default 4 GiB)
or :func:`set_max_image_bytes`.
"""
from __future__ import annotations

import math
import os
import stat

from training.io.errors import ImageReadError

DEFAULT_MAX_IMAGE_BYTES = 4 << 30
#: Beyond this many decoded bytes a compressed image must also have a plausible ratio.
SMALL_BYTES = 64 << 20
#: Highest plausible decoded/encoded ratio: deflate tops out at 1032:1; RLE at 64:1 (128
#: bytes in 2); JPEG-LS and JPEG 2000 of blank images can go further, hence the margin.
MAX_COMPRESSION_RATIO = 2000
GZIP_MAX_RATIO = 1032
_override: int | None = None


def max_image_bytes() -> int:
    if _override is not None:
        return _override
    try:
        return int(float(os.environ.get("NAPARI_VISMAE_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)))
    except ValueError:
        return DEFAULT_MAX_IMAGE_BYTES


def set_max_image_bytes(limit: int | None) -> None:
    """Set the ceiling for this process (``None``: back to the environment / default)."""
    global _override
    _override = None if limit is None else int(limit)


def _fmt(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_declared_size(path, shape, itemsize: int, *, stored_bytes: int | None = None,
                        available: int | None = None, compressed: bool = False,
                        max_ratio: float = MAX_COMPRESSION_RATIO, what: str = "image") -> int:
    """Refuse an image whose declared size is impossible or too large; returns decoded bytes.

    ``shape``/``itemsize``: what decoding will allocate. ``stored_bytes``: what the header
    says is stored (uncompressed data), compared with ``available`` (what the file holds).
    Compressed data is compared with ``available`` through ``max_ratio``.
    """
    dims = [int(s) for s in shape]
    if any(s < 0 for s in dims):
        raise ImageReadError(path, f"{what} declares a negative size {tuple(dims)}")
    decoded = math.prod(dims) * int(itemsize)
    shape_text = " x ".join(str(s) for s in dims)
    if available is not None and not compressed:
        need = decoded if stored_bytes is None else int(stored_bytes)
        if need > available:
            raise ImageReadError(
                path, f"{what} declares {shape_text} values ({_fmt(need)}) but the file holds "
                      f"only {_fmt(available)} of it (truncated or a false header)")
    if available is not None and compressed and decoded > SMALL_BYTES:
        if decoded > max_ratio * max(available, 1):
            raise ImageReadError(
                path, f"{what} declares {shape_text} values ({_fmt(decoded)}) from "
                      f"{_fmt(available)} of compressed data, a ratio above {max_ratio:.0f}:1 "
                      "(a false header or a decompression bomb)")
    limit = max_image_bytes()
    if decoded > limit:
        raise ImageReadError(
            path, f"{what} declares {shape_text} values ({_fmt(decoded)} decoded), more than the "
                  f"limit of {_fmt(limit)} (set NAPARI_VISMAE_MAX_IMAGE_BYTES to allow more)")
    return decoded


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def not_regular_reason(path) -> str | None:
    """Why ``path`` must not be opened for reading (None for a regular file). Never opens it,
    so a FIFO cannot block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found" + (" (dangling link)" if os.path.islink(path) else "")
    except OSError as e:
        return f"cannot access it ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return f"is {name}, not a regular file; skipped"
    return "is not a regular file; skipped"


def check_regular_file(path) -> None:
    reason = not_regular_reason(path)
    if reason is not None:
        raise ImageReadError(path, reason)


def link_outside(path, root) -> bool:
    """Whether ``path`` is a symbolic link whose target lies outside the folder ``root``."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    base = os.path.realpath(root)
    return os.path.commonpath([target, base]) != base
