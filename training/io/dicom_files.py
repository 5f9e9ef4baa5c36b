"""DICOM files: sniffing, reading one dataset with a clear reason when it fails."""

from __future__ import annotations

import os
import warnings

from training.io.errors import ImageReadError

SEG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    }
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def looks_like_dicom_file(path: str | os.PathLike) -> bool:
    """Cheap sniff: the 'DICM' magic at byte 128 (files without preamble are not detected)."""
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
