"""Time reading a synthetic CT series (default 300 slices of 512x512) with training.io.read_image.

Prints one JSON line: {"benchmark": "io_load", "slices": ..., "seconds": ..., ...}.
Usage: python benchmarks/io_load.py [--slices 300] [--size 512] [--repeat 3] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_series(folder: Path, n: int, size: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2000, (size, size), dtype=np.uint16)
    order = rng.permutation(n)  # file names do not follow slice order
    for name_idx, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Bench^Phantom", "BENCH"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, int(k) + 1
        ds.ImagePositionPatient = [-250.0, -250.0, float(k) * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.977, 0.977]
        ds.SliceThickness = 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.roll(base, int(k), axis=0).tobytes()
        ds.save_as(folder / f"IM{name_idx:05d}", enforce_file_format=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also append the JSON line to this file")
    args = ap.parse_args(argv)

    from training.io import read_image

    with tempfile.TemporaryDirectory(prefix="vismae-io-bench-") as tmp:
        folder = Path(tmp) / "series"
        folder.mkdir()
        t0 = time.perf_counter()
        write_series(folder, args.slices, args.size)
        t_write = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            vols = read_image(folder)
            times.append(time.perf_counter() - t0)
        v = vols[0]
        assert v.array.shape == (args.slices, args.size, args.size), v.array.shape
        mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    rec = {
        "benchmark": "io_load",
        "slices": args.slices,
        "size": args.size,
        "seconds": round(min(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "slices_per_s": round(args.slices / min(times), 1),
        "mb": round(mb, 1),
        "mb_per_s": round(mb / min(times), 1),
        "write_seconds": round(t_write, 2),
        "dtype": str(v.array.dtype),
        "spacing": [round(s, 4) for s in v.spacing],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    line = json.dumps(rec)
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
