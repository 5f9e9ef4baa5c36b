"""2-D images (PNG, JPEG, TIFF, BMP): grayscale or RGB(A), pixel units (1 pixel = 1 mm)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.io.errors import ImageReadError
from training.io.limits import check_declared_size, check_regular_file
from training.io.volume import Volume

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_image_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def _check_tiff(tif, path: str) -> None:
    """Refuse a TIFF whose declared size is over the ceiling or implausible for the file."""
    if not tif.series:
        raise ImageReadError(path, "TIFF holds no image")
    series = tif.series[0]
    dtype = np.dtype(series.dtype)
    if dtype.kind == "c":
        raise ImageReadError(path, f"complex-valued image data ({dtype}) is not supported; "
                                   "save the magnitude instead")
    compressed = any(getattr(p, "compression", 1) not in (1, None) for p in tif.pages[:1])
    check_declared_size(path, series.shape, dtype.itemsize, available=os.path.getsize(path),
                        compressed=compressed, what="TIFF data")


def read_2d_image(path: str | os.PathLike) -> Volume:
    """Read a PNG/JPEG/TIFF/BMP file. Multi-page TIFFs become a (z, y, x) stack."""
    path = str(path)
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    check_regular_file(path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                _check_tiff(tif, path)
                arr = tif.asarray()
        else:
            import imageio.v3 as iio

            arr = iio.imread(path)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise ImageReadError(
            path, f"corrupt, truncated or unsupported image ({type(e).__name__}: {e})"
        ) from None
    arr = np.asarray(arr)
    if arr.dtype.kind == "c":
        raise ImageReadError(path, f"complex-valued image data ({arr.dtype}) is not supported; "
                                   "save the magnitude instead")
    if arr.dtype.kind not in "biuf":
        raise ImageReadError(path, f"image data type {arr.dtype} is not supported")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    rgb = False
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4) and arr.shape[0] > 4:
        if arr.shape[-1] == 2:  # grey + alpha
            arr = arr[..., 0]
        elif arr.shape[-1] == 4 and np.all(arr[..., 3] == arr[..., 3].flat[0]):
            arr = arr[..., :3]  # opaque alpha carries nothing
            rgb = True
        else:
            rgb = True
        if (
            rgb
            and np.array_equal(arr[..., 0], arr[..., 1])
            and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            arr, rgb = arr[..., 0], False  # a grey image saved as RGB
    if arr.ndim < 2 or (arr.ndim > 3 and not rgb) or arr.size == 0:
        raise ImageReadError(path, f"unsupported image shape {arr.shape}")
    meta = {"source_kind": "image", "files": [path], "affine": np.eye(4), "warnings": []}
    return Volume(
        array=np.ascontiguousarray(arr),
        affine=np.eye(4),
        modality="OT",
        window=None,
        name=Path(path).stem,
        rgb=rgb,
        metadata=meta,
    )
