"""DICOM-SEG files → a labels :class:`Volume` (through highdicom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.io.dicom_frames import _safe_name
from training.io.errors import ImageReadError
from training.io.volume import Volume, canonical_slice_order


def _read_seg(ds, path: str) -> Volume:
    try:
        import highdicom as hd

        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(path, f"cannot read DICOM-SEG ({type(e).__name__}: {e})") from None
    arr = np.asarray(vol.array)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    affine = np.asarray(vol.affine, dtype=np.float64)
    arr, affine, _ = canonical_slice_order(arr, affine)
    names, values = {}, {}
    for item in ds.get("SegmentSequence", []):
        num = int(item.SegmentNumber)
        names[num] = str(item.get("SegmentLabel", f"Segment {num}"))
        tid = str(item.get("TrackingID", "") or "")
        if tid.startswith("napari-label-"):
            try:
                values[num] = int(tid.rsplit("-", 1)[1])
            except ValueError:
                pass
    if values and any(values.get(k, k) != k for k in names):
        lut = np.arange(max(names) + 1, dtype=np.int64)
        for k, v in values.items():
            lut[k] = v
        arr = lut[arr.astype(np.int64)]
    arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)
    if arr.shape[0] == 1:
        arr = arr[0]
    label_names = {values.get(k, k): n for k, n in names.items()}
    meta = {
        "source_kind": "dicom-seg",
        "files": [path],
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))],
        "modality": "SEG",
        "affine": affine,
        "label_names": label_names,
        "warnings": [],
    }
    return Volume(
        array=arr,
        affine=affine,
        modality="SEG",
        window=None,
        name=_safe_name(ds, Path(path).stem),
        kind="labels",
        metadata=meta,
    )
