"""``read_image``: one entry point for DICOM files/folders, NIfTI and 2-D images."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from training.io.dicom import read_dicom
from training.io.errors import ImageReadError
from training.io.images import is_image_path, read_2d_image
from training.io.label_table import attach_label_table
from training.io.limits import link_outside, not_regular_reason
from training.io.nifti import is_nifti_path, read_nifti
from training.io.volume import Volume

log = logging.getLogger(__name__)

#: Files in a folder that are obviously not images: skipped without a report entry.
IGNORED_SUFFIXES = (
    ".txt",
    ".json",
    ".xml",
    ".md",
    ".csv",
    ".html",
    ".htm",
    ".pdf",
    ".py",
    ".log",
    ".ini",
    ".yaml",
    ".yml",
    ".zip",
    ".gz",
    ".bak",
    ".db",
    ".ds_store",
)


@dataclass
class LoadReport:
    """What a read did: files used, files refused (with reasons), geometry warnings."""

    loaded: list[str] = field(default_factory=list)
    errors: list[ImageReadError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that was not loaded."""
        return [(e.path, e.reason) for e in self.errors]

    def summary(self, max_items: int = 5) -> str:
        lines = []
        if self.skipped:
            lines.append(f"{len(self.skipped)} file(s) could not be read:")
            lines += [f"  {p}: {r}" for p, r in self.skipped[:max_items]]
            if len(self.skipped) > max_items:
                lines.append(f"  ... and {len(self.skipped) - max_items} more")
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  {w}" for w in self.warnings[:max_items]]
            if len(self.warnings) > max_items:
                lines.append(f"  ... and {len(self.warnings) - max_items} more")
        return "\n".join(lines)


class ReadResult(list):
    """A list of :class:`Volume` with the :class:`LoadReport` of the read as ``.report``."""

    def __init__(self, volumes: Iterable[Volume] = (), report: LoadReport | None = None):
        super().__init__(volumes)
        self.report = report or LoadReport()


def _expand(paths: list[str]) -> tuple[list[str], set[str], list[ImageReadError]]:
    """Files to consider, the subset found by walking folders, and what was left out.

    Only regular files are read: FIFOs, devices and sockets are never opened (a FIFO would
    block the reader forever), and links from inside a folder to outside it are skipped.
    """
    files: list[str] = []
    from_dirs: set[str] = set()
    notes: list[ImageReadError] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    if n.startswith("."):
                        continue
                    f = os.path.join(root, n)
                    if link_outside(f, p):
                        notes.append(ImageReadError(
                            f, "is a link to a file outside the folder; skipped"))
                        continue
                    reason = not_regular_reason(f)
                    if reason is not None:
                        notes.append(ImageReadError(f, reason))
                        continue
                    files.append(f)
                    from_dirs.add(f)
        else:
            reason = not_regular_reason(p)
            if reason is not None:
                notes.append(ImageReadError(p, reason))
                continue
            files.append(p)
    return files, from_dirs, notes


def _guarded(reader, path: str):
    """``reader(path)``; anything but :class:`ImageReadError` becomes one naming the file."""
    try:
        return reader(path)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to read it") from None
    except Exception as e:  # noqa: BLE001 - a reader must never pass a foreign error on
        raise ImageReadError(path, f"cannot read it ({type(e).__name__}: {e})") from None


def read_image(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike]) -> ReadResult:
    """Read a file, a folder (recursively) or a list of files/folders into volumes.

    * DICOM files are grouped into series (one volume each); see :mod:`.dicom`.
    * ``.nii``/``.nii.gz`` files → one volume each; see :mod:`.nifti`.
    * PNG/JPEG/TIFF/BMP given explicitly → one 2-D volume each (they are not
      picked up from folders, where they are usually thumbnails).

    Unreadable files are listed in ``result.report.skipped``; if nothing can be
    read, :class:`ImageReadError` is raised (naming the file and reason when a
    single file was given).
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        paths = [os.fspath(path_or_paths)]
    else:
        paths = [os.fspath(p) for p in path_or_paths]
    if not paths:
        raise ImageReadError("<nothing>", "no path given")
    for p in paths:
        if not os.path.exists(p):
            raise ImageReadError(p, "file or folder not found")
    report = LoadReport()
    result = ReadResult(report=report)
    files, from_dirs, notes = _expand(paths)
    report.errors.extend(notes)
    dicom_files = []
    for f in files:
        low = f.lower()
        if is_nifti_path(f):
            try:
                result.append(attach_label_table(_guarded(read_nifti, f), f))
                report.loaded.append(f)
            except ImageReadError as e:
                report.errors.append(e)
        elif is_image_path(f):
            if f in from_dirs:
                continue
            try:
                result.append(_guarded(read_2d_image, f))
                report.loaded.append(f)
            except ImageReadError as e:
                report.errors.append(e)
        elif f in from_dirs and (
            low.endswith(IGNORED_SUFFIXES) or Path(low).name in ("dicomdir", "readme")
        ):
            continue
        else:
            dicom_files.append(f)
    if dicom_files:
        try:
            vols = read_dicom(
                dicom_files, on_skip=report.errors.append, on_warning=report.warnings.append
            )
        except MemoryError:
            report.errors.append(ImageReadError(dicom_files[0], "not enough memory to read it"))
            vols = []
        except Exception as e:  # noqa: BLE001 - last line of defence: never a foreign error
            where = dicom_files[0] if len(dicom_files) == 1 else os.path.commonpath(dicom_files)
            report.errors.append(ImageReadError(where, f"cannot read the DICOM files "
                                                       f"({type(e).__name__}: {e})"))
            vols = []
        except ImageReadError as e:
            if not report.errors:
                report.errors.append(e)
            vols = []
        result.extend(vols)
        skipped = {p for p, _ in report.skipped}
        report.loaded += [f for f in dicom_files if f not in skipped]
    for v in result:
        report.warnings += [w for w in v.metadata.get("warnings", []) if w not in report.warnings]
    if not result:
        if len(files) + len(notes) == 1 and report.errors:
            raise report.errors[0]
        where = (
            paths[0] if len(paths) == 1 else os.path.commonpath([os.path.abspath(p) for p in paths])
        )
        if not report.skipped:
            raise ImageReadError(where, "contains no image files (DICOM, NIfTI, PNG, JPEG or TIFF)")
        first = report.skipped[0]
        raise ImageReadError(
            where,
            f"none of {len(report.skipped)} file(s) could be read; e.g. {first[0]}: {first[1]}",
        )
    for p, r in report.skipped:
        log.info("not loaded: %s: %s", p, r)
    return result
