"""DICOM pixel data: decoding (with decoder checks) and stored values → real values
(modality LUT / rescale, MONOCHROME1 inversion, palette colour)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.io.dicom_frames import _Frame
from training.io.errors import ImageReadError, MissingDecoderError


def check_decoder(ds, path: str) -> None:
    """Raise :class:`MissingDecoderError` if the pixel data needs an unavailable decoder."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise MissingDecoderError(path, f"{ts.name} ({ts})", []) from None
    if not decoder.is_available:
        raise MissingDecoderError(path, ts.name, list(decoder.missing_dependencies))


# --------------------------------------------------------------------- pixel decoding
def _decode(ds, path: str) -> np.ndarray:
    check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except MissingDecoderError:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on bad pixel data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "bytes" in msg.lower() and ("less" in msg.lower() or "expected" in msg.lower()):
            reason = f"pixel data is truncated ({msg})"
        else:
            reason = f"cannot decode pixel data ({type(e).__name__}: {msg})"
        raise ImageReadError(path, reason) from None
    return np.asarray(arr)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _to_values(raw: np.ndarray, frames: Sequence[_Frame], ds, path: str) -> tuple[np.ndarray, dict]:
    """Apply modality LUT / rescale, MONOCHROME1 inversion and palette colour.

    ``raw`` is (n_frames, rows, cols[, samples]). Returns the value array and
    info (``rgb``, ``inverted`` range).
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "").upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    info: dict[str, Any] = {"rgb": False, "invert": None}
    if samples > 1 or raw.ndim == 4:
        info["rgb"] = True
        return raw, info
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            out = apply_color_lut(raw, ds)
        except Exception as e:  # noqa: BLE001
            raise ImageReadError(
                path, f"cannot apply the palette colour LUT ({type(e).__name__}: {e})"
            ) from None
        info["rgb"] = True
        return out, info
    if raw.dtype.kind == "f":  # float pixel data: already real values
        out = raw.astype(np.float32, copy=False)
    elif "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        out = apply_modality_lut(raw, ds)
    else:
        slopes = np.array([fr.slope for fr in frames], dtype=np.float64)
        inters = np.array([fr.intercept for fr in frames], dtype=np.float64)
        if np.all(slopes == 1.0) and np.all(inters == 0.0):
            out = raw
        else:
            lo, hi = float(raw.min()), float(raw.max())
            ends = np.stack([lo * slopes + inters, hi * slopes + inters])
            integral = np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters))
            if integral and ends.min() >= -32768 and ends.max() <= 32767:
                dtype = np.int16
            elif integral and ends.min() >= -(2**31) and ends.max() < 2**31:
                dtype = np.int32
            else:
                dtype = np.float32
            if np.all(slopes == slopes[0]) and np.all(inters == inters[0]):
                out = raw.astype(np.float64 if dtype == np.float32 else dtype)
                if slopes[0] != 1.0:
                    out *= dtype(slopes[0]) if dtype != np.float32 else slopes[0]
                if inters[0] != 0.0:
                    out += dtype(inters[0]) if dtype != np.float32 else inters[0]
                out = out.astype(dtype, copy=False)
            else:
                out = (
                    raw.astype(np.float64) * slopes[:, None, None] + inters[:, None, None]
                ).astype(dtype)
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(ds)
        s, b = frames[0].slope, frames[0].intercept
        vlo, vhi = sorted((lo * s + b, hi * s + b))
        if out.dtype.kind in "iu":
            out = np.int64(vlo + vhi) - out.astype(np.int64)
            out = out.astype(np.int32 if out.min() < -32768 or out.max() > 32767 else np.int16)
        else:
            out = (vlo + vhi) - out
        info["invert"] = (vlo, vhi)
    return out, info
