"""Synthetic DICOM series with known geometry, written by the tests themselves.

No patient data: every identifier is a fixed dummy value.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def stored_values(k: int, rows: int, cols: int) -> np.ndarray:
    """Stored pixel values of slice ``k``: encode the slice index and the pixel position."""
    j, i = np.mgrid[0:rows, 0:cols]
    return (k * 100 + (j * 3 + i) % 97).astype(np.uint16)


def make_series(
    folder,
    n=8,
    rows=24,
    cols=20,
    spacing=2.5,
    pixel_spacing=(0.8, 0.7),
    origin=(-100.0, -120.0, 50.0),
    row_dir=(1, 0, 0),
    col_dir=(0, 1, 0),
    offsets=None,
    modality="CT",
    slope=1.0,
    intercept=-1024.0,
    window=(40, 400),
    series_uid=None,
    study_uid=None,
    frame_uid=None,
    description="Synthetic",
    series_number=1,
    shuffle=True,
    photometric="MONOCHROME2",
    positions=True,
    seed=0,
    prefix="img",
    shapes=None,
) -> dict:
    """Write ``n`` single-frame slices into ``folder``; return the ground truth.

    ``offsets`` are the slice positions along the normal (default ``k * spacing``).
    ``shapes`` optionally gives a (rows, cols) per slice (for mixed-shape tests).
    Files are named in a shuffled order so that sorting by name is wrong.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row_dir = np.asarray(row_dir, float) / np.linalg.norm(row_dir)
    col_dir = np.asarray(col_dir, float) / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    offsets = np.arange(n) * spacing if offsets is None else np.asarray(offsets, float)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    files, ipps = [], []
    for name_idx, k in enumerate(order):
        r, c = shapes[k] if shapes is not None else (rows, cols)
        ipp = np.asarray(origin, float) + normal * offsets[k]
        ipps.append(ipp)
        meta = FileMetaDataset()
        sop_class = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Test^Phantom"
        ds.PatientID = "PHANTOM-0"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyID = "1"
        ds.StudyDate = "20000101"
        ds.StudyTime = "000000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.Modality = modality
        ds.Manufacturer = "napari-vismae tests"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        if positions:
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [str(pixel_spacing[0]), str(pixel_spacing[1])]
        ds.SliceThickness = str(spacing)
        ds.Rows, ds.Columns = r, c
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        if slope is not None:
            ds.RescaleSlope = str(slope)
            ds.RescaleIntercept = str(intercept)
            ds.RescaleType = "HU" if modality == "CT" else "US"
        if window is not None:
            ds.WindowCenter = str(window[0])
            ds.WindowWidth = str(window[1])
        ds.PixelData = stored_values(k, r, c).tobytes()
        f = folder / f"{prefix}{name_idx:04d}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(f)
    return {
        "files": files,
        "order": order,
        "series_uid": series_uid,
        "study_uid": study_uid,
        "frame_uid": frame_uid,
        "normal": normal,
        "row_dir": row_dir,
        "col_dir": col_dir,
        "origin": np.asarray(origin, float),
        "offsets": offsets,
    }
