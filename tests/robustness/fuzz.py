"""Fuzzing the readers: real DICOM / NIfTI files, mutated (truncation, byte flips, tag and
header edits, huge declared sizes), read in a worker process with an address-space limit
and a per-file timeout. Every outcome is counted: loaded, refused (ImageReadError),
crashed (any other exception, or a memory blow-up) or hung.

``python -m tests.robustness.fuzz --cases 3000`` runs a longer campaign and prints counts.
"""
from __future__ import annotations

import glob
import json
import os
import random
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, resource, sys, traceback
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import numpy as np
from training.io import ImageReadError, read_image
from training.io.limits import set_max_image_bytes
set_max_image_bytes(int(sys.argv[2]))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = line.strip()
    try:
        vols = read_image(path)
        for v in vols:
            np.asarray(v.array).sum()
        out = {"outcome": "loaded", "n": len(vols)}
    except ImageReadError as e:
        if "not enough memory" in e.reason:
            out = {"outcome": "crashed", "error": f"memory blow-up: {e.reason}"}
        else:
            out = {"outcome": "refused", "error": e.reason[:200]}
    except BaseException as e:  # noqa: BLE001 - what the fuzzer is looking for
        out = {"outcome": "crashed", "error": f"{type(e).__name__}: {str(e)[:200]}",
               "trace": traceback.format_exc()[-1500:]}
    print(json.dumps(out), flush=True)
"""


def corpus() -> list[Path]:
    import nibabel
    import pydicom

    dcm_dir = Path(pydicom.__file__).parent / "data" / "test_files"
    dicoms = sorted(Path(p) for p in glob.glob(str(dcm_dir / "*.dcm"))
                    if os.path.getsize(p) < 200_000)
    nii_dir = Path(nibabel.__file__).parent / "tests" / "data"
    niftis = sorted(Path(p) for p in glob.glob(str(nii_dir / "*.nii*"))
                    if os.path.getsize(p) < 2_000_000 and "dconn" not in p)
    return dicoms + niftis


HUGE = [0, 1, 2, 3, 255, 256, 4095, 65535, 2**31 - 1, 10**6]
DICOM_TAGS = ["Rows", "Columns", "NumberOfFrames", "BitsAllocated", "BitsStored",
              "SamplesPerPixel", "PixelRepresentation", "PlanarConfiguration"]
DICOM_TEXT = {"RescaleSlope": ["0", "nan", "-1e308", "1e308", "abc"],
              "ImageOrientationPatient": [["0"] * 6, ["2", "0", "0", "0", "2", "0"],
                                          ["1", "0", "0", "1", "0", "0"], ["nan"] * 6],
              "PixelSpacing": [["0", "0"], ["-1", "1"], ["nan", "1"]],
              "PhotometricInterpretation": ["PALETTE COLOR", "YBR_FULL_422", "RGB", "XYZ"],
              "ImagePositionPatient": [["nan", "0", "0"], ["1e308", "0", "0"]]}


def _mutate_dicom_tags(src: Path, dst: Path, rng: random.Random) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(src, force=True)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6:
                kw = rng.choice(DICOM_TAGS)
                setattr(ds, kw, rng.choice(HUGE))
            else:
                kw = rng.choice(sorted(DICOM_TEXT))
                setattr(ds, kw, rng.choice(DICOM_TEXT[kw]))
        if rng.random() < 0.1 and "PixelData" in ds:
            del ds.PixelData
        ds.save_as(dst, enforce_file_format=False)
        return True
    except Exception:  # noqa: BLE001 - pydicom refuses to write some values: mutate bytes
        return False


def _mutate_nifti_header(data: bytearray, rng: random.Random) -> None:
    gz = data[:2] == b"\x1f\x8b"
    if gz:
        import gzip
        try:
            data[:] = gzip.decompress(bytes(data))
        except Exception:  # noqa: BLE001
            return
    if len(data) < 348:
        return
    end = "<" if struct.unpack("<i", data[:4])[0] in (348, 540) else ">"
    n1 = struct.unpack(end + "i", data[:4])[0] == 348
    for _ in range(rng.randint(1, 3)):
        what = rng.choice(["dim", "datatype", "vox_offset", "pixdim", "srow", "scl"])
        if what == "dim" and n1:
            k = rng.randint(0, 7)
            struct.pack_into(end + "h", data, 40 + 2 * k, rng.choice([-1, 0, 1, 7, 4096, 32767]))
        elif what == "datatype" and n1:
            struct.pack_into(end + "h", data, 70, rng.choice([0, 1, 2, 4, 8, 16, 32, 64, 128,
                                                              256, 511, 1536, 1792, 2304, 999]))
        elif what == "vox_offset" and n1:
            struct.pack_into(end + "f", data, 108, rng.choice([0.0, 352.0, 1e9, -5.0]))
        elif what == "pixdim" and n1:
            k = rng.randint(1, 4)
            struct.pack_into(end + "f", data, 76 + 4 * k, rng.choice([0.0, float("nan"), -2.0,
                                                                      1e30]))
        elif what == "srow" and n1:
            struct.pack_into(end + "h", data, 254, 1)
            k = rng.randint(0, 11)
            struct.pack_into(end + "f", data, 280 + 4 * k, rng.choice([0.0, float("nan"), 1e30]))
        elif what == "scl" and n1:
            struct.pack_into(end + "f", data, 112, rng.choice([0.0, float("nan"), float("inf"),
                                                               -1.0]))
    if gz:
        import gzip
        data[:] = gzip.compress(bytes(data), compresslevel=1)


def make_case(src: Path, dst: Path, rng: random.Random) -> str:
    """Write a mutated copy of ``src`` to ``dst``; returns the mutation's name."""
    data = bytearray(src.read_bytes())
    is_nifti = src.name.endswith((".nii", ".nii.gz"))
    kind = rng.choice(["truncate", "flip", "header", "header", "header+flip"])
    if kind.startswith("header") and not is_nifti:
        if not _mutate_dicom_tags(src, dst, rng):
            kind = "flip"
        else:
            data = bytearray(dst.read_bytes())
    elif kind.startswith("header"):
        _mutate_nifti_header(data, rng)
    if kind == "truncate":
        data = data[: rng.randint(0, max(len(data) - 1, 0))]
    if kind in ("flip", "header+flip"):
        for _ in range(rng.randint(1, 20)):
            if data:
                i = rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(
                    min(len(data), 2048))
                data[i] = rng.randrange(256)
    dst.write_bytes(bytes(data))
    return kind


class Worker:
    def __init__(self, mem_limit: int, max_image: int):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(mem_limit),
                                      str(max_image)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, cwd=ROOT)
        ready = self._read(60)
        if ready is None:
            raise RuntimeError("fuzz worker did not start")

    def _read(self, timeout: float):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"outcome": "crashed", "error": "worker died"}

    def run(self, path: Path, timeout: float):
        self.proc.stdin.write(str(path) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def campaign(workdir: Path, cases: int, seed: int = 0, time_budget: float | None = None,
             timeout: float = 10.0, mem_limit: int = 3 << 30, max_image: int = 512 << 20):
    """Run ``cases`` mutated files; returns (counts, crash and hang details)."""
    rng = random.Random(seed)
    files = corpus()
    counts = {"tried": 0, "loaded": 0, "refused": 0, "crashed": 0, "hung": 0}
    problems: list[dict] = []
    reasons: Counter = Counter()
    worker = Worker(mem_limit, max_image)
    start = time.monotonic()
    try:
        for k in range(cases):
            if time_budget is not None and time.monotonic() - start > time_budget:
                break
            src = files[k % len(files)] if k < len(files) else rng.choice(files)
            suffix = ".nii.gz" if src.name.endswith(".nii.gz") else src.suffix
            dst = workdir / f"case{k:05d}{suffix}"
            kind = make_case(src, dst, rng)
            res = worker.run(dst, timeout)
            counts["tried"] += 1
            if res is None:
                counts["hung"] += 1
                problems.append({"case": dst.name, "source": src.name, "mutation": kind,
                                 "outcome": "hung"})
                worker.kill()
                worker = Worker(mem_limit, max_image)
                continue
            counts[res["outcome"]] += 1
            if res["outcome"] == "refused":
                reasons[res["error"].split("(")[0].split(":")[0].strip()[:60]] += 1
            if res["outcome"] == "crashed":
                problems.append({"case": dst.name, "source": src.name, "mutation": kind, **res})
                if res.get("error") == "worker died":
                    worker.kill()
                    worker = Worker(mem_limit, max_image)
                continue
            dst.unlink()
    finally:
        worker.kill()
    counts["elapsed_s"] = round(time.monotonic() - start, 1)
    campaign.reasons = reasons  # the most common refusals, for a longer run's report
    return counts, problems


if __name__ == "__main__":
    import argparse
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        counts, problems = campaign(Path(d), a.cases, a.seed)
    print(json.dumps(counts))
    for reason, n in campaign.reasons.most_common(25):
        print(f"{n:6d}  {reason}")
    for pr in problems[:30]:
        print(json.dumps(pr)[:600])
