"""DICOM files: sniffing, reading one dataset with a clear reason when it fails."""

from __future__ import annotations

import os
import warnings

from training.io.errors import ImageReadError
from training.io.limits import check_declared_size, check_regular_file, not_regular_reason

SEG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    }
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def looks_like_dicom_file(path: str | os.PathLike) -> bool:
    """Cheap sniff: the 'DICM' magic at byte 128 (files without preamble are not detected).
    Never opens anything but a regular file (a FIFO would block)."""
    if not_regular_reason(path) is not None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: str | os.PathLike):
    """Read one DICOM file fully; raise :class:`ImageReadError` with a clear reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = str(path)
    check_regular_file(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
        for w in caught:
            text = str(w.message)
            if "End of file reached" in text or "truncat" in text.lower():
                raise ImageReadError(path, f"file is truncated ({text.split(' in file ')[0]})")
    except ImageReadError:
        raise
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as e:  # noqa: BLE001 - any parser failure means "not DICOM"
            raise ImageReadError(path, f"not a DICOM file ({type(e).__name__})") from None
        if not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData", "Modality")):
            raise ImageReadError(
                path, "not a DICOM file (no DICOM preamble or known attributes)"
            ) from None
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise ImageReadError(
            path, f"corrupt or truncated DICOM file ({type(e).__name__}: {e})"
        ) from None
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds) -> None:
    """Files without file meta (old ACR-NEMA style): record the encoding they were read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if little in (None, True):
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit in (None, True) else ExplicitVRLittleEndian
        )
    else:
        meta.TransferSyntaxUID = ExplicitVRBigEndian


def _no_pixel_reason(ds) -> str:
    sop_class = str(
        getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
        or ds.get("SOPClassUID", "")
    )
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "is a DICOMDIR index, not an image (open the folder that contains it instead)"
    try:
        from pydicom.uid import UID

        name = UID(sop_class).name if sop_class else "unknown SOP class"
    except Exception:  # noqa: BLE001
        name = sop_class or "unknown SOP class"
    modality = str(ds.get("Modality", "") or "")
    what = f"{name}" + (f", modality {modality}" if modality else "")
    return f"contains no pixel data ({what}); only images can be displayed"


def _int_attr(ds, keyword: str, default: int, path: str, lo: int = 0) -> int:
    value = ds.get(keyword, default)
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ImageReadError(path, f"{keyword} {str(value)[:40]!r} is not a number") from None
    if n < lo:
        raise ImageReadError(path, f"{keyword} is {n}")
    return n


def check_pixel_budget(ds, path: str) -> None:
    """Refuse pixel data whose declared size (Rows x Columns x NumberOfFrames x samples) is
    impossible for the file or over the ceiling, before any frame is listed or decoded."""
    keyword = next((k for k in PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        return
    rows = _int_attr(ds, "Rows", 0, path)
    cols = _int_attr(ds, "Columns", 0, path)
    frames = _int_attr(ds, "NumberOfFrames", 1, path) or 1
    samples = _int_attr(ds, "SamplesPerPixel", 1, path, lo=1)
    bits = _int_attr(ds, "BitsAllocated", 16, path, lo=1)
    if keyword == "FloatPixelData":
        bits = 32
    elif keyword == "DoubleFloatPixelData":
        bits = 64
    if bits not in (1, 8, 16, 32, 64):
        raise ImageReadError(path, f"BitsAllocated {bits} is not supported")
    try:
        available = len(ds[keyword].value or b"")
    except Exception:  # noqa: BLE001 - a value pydicom cannot even size
        available = 0
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(ts is not None and ts.is_compressed and keyword == "PixelData")
    values = rows * cols * frames * samples
    if compressed and frames > max(available // 8, 1):
        raise ImageReadError(
            path, f"NumberOfFrames {frames} cannot fit in {available} bytes of compressed pixel "
                  "data (each frame needs at least one 8-byte item)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    stored = values * bits // 8 if bits >= 8 else (values + 7) // 8
    if photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and not compressed:
        stored = stored * 2 // 3
    where = f"pixel data ({frames} frame(s) of {rows} x {cols}, {samples} sample(s), {bits} bits)"
    check_declared_size(path, (frames, rows, cols, samples), max(bits // 8, 1),
                        stored_bytes=stored, available=available, compressed=compressed,
                        what=where)
