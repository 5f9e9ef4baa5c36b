"""Errors raised by the image readers and writers.

Every message names the file and says what is wrong with it. Messages never
contain patient identifiers (names, IDs, birth dates): only paths, attribute
names and technical reasons.
"""

from __future__ import annotations

import os


class ImageReadError(Exception):
    """A file (or folder) could not be read as an image.

    ``path`` is the offending file, ``reason`` a short human-readable explanation.
    ``str(err)`` is ``"Cannot read <path>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"Cannot read {self.path}: {self.reason}")

    def __reduce__(self):  # keep picklable for process pools
        return (type(self), (self.path, self.reason))


class MissingDecoderError(ImageReadError):
    """Compressed pixel data whose decoder package is not installed."""

    def __init__(
        self, path: str | os.PathLike, transfer_syntax: str, packages: list[str] | None = None
    ):
        self.transfer_syntax = str(transfer_syntax)
        self.packages = list(packages or [])
        hint = "; ".join(self.packages) if self.packages else "no decoder is known to pydicom"
        super().__init__(
            path,
            f"pixel data is compressed with {self.transfer_syntax} and no decoder for it is "
            f"installed (install one of: {hint})",
        )

    def __reduce__(self):
        return (type(self), (self.path, self.transfer_syntax, self.packages))


class ImageWriteError(Exception):
    """A result could not be written; ``str(err)`` names the target file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"Cannot write {self.path}: {self.reason}")
