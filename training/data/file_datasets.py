"""File datasets: a CSV of 2-D files (the official layout) and folders of volumes (NIfTI
files or DICOM series) with label volumes of the same name."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.preprocessing import Preprocessing
from training.data.slice_datasets import (
    DataError,
    SliceDataset,
    SliceSample,
    _check_image,
    _check_mask,
)
from training.io.errors import ImageReadError
from training.io.limits import not_regular_reason

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_EXTS = (".nii", ".nii.gz")
# The official classification CSV reader maps these words to 1 ("convert_label").
POSITIVE_WORDS = {"positive", "yes", "malignant", "true", "abnormal"}
NEGATIVE_WORDS = {"negative", "no", "benign", "false", "normal"}


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_EXTS)


def read_slice_file(path: str | os.PathLike) -> tuple[np.ndarray, str | None, tuple | None]:
    """A 2-D image file -> (array, modality, window): PNG/JPG/TIFF, .npy, 2-D NIfTI or one
    DICOM file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    reason = not_regular_reason(p)
    if reason is not None:
        raise DataError(f"{p}: {reason}")
    try:
        return _read_slice_file(p)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{p}: not enough memory to read it") from None
    except Exception as e:  # noqa: BLE001 - every reader fails its own way on a bad file
        raise DataError(f"{p}: cannot read it ({_why(e)})") from None


def _why(e: BaseException) -> str:
    if isinstance(e, ImageReadError):
        return e.reason
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def read_nifti_volume(p: Path) -> np.ndarray:
    """A NIfTI volume as (z, y, x), its declared size checked first (see
    :mod:`training.io.limits`); any failure is a :class:`DataError` naming the file."""
    import nibabel as nib

    from training.io.nifti import _check_header, read_nifti

    reason = not_regular_reason(p)
    if reason is not None:
        raise DataError(f"{p}: {reason}")
    try:
        _check_header(nib.load(str(p)), str(p))
        # the readers' display layout (training.io.volume), as a DICOM series and the
        # plugin show it: labels on any grid line up with the image they were drawn on
        arr = np.asarray(read_nifti(str(p)).array)
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3:
            raise ValueError(f"expected a 2-D or 3-D NIfTI, got shape {arr.shape}")
    except MemoryError:
        raise DataError(f"{p}: not enough memory to read it") from None
    except Exception as e:  # noqa: BLE001 - ImageFileError, EOFError, zlib.error, ValueError...
        raise DataError(f"{p}: not a readable NIfTI volume ({_why(e)})") from None
    return arr


def _read_slice_file(p: Path) -> tuple[np.ndarray, str | None, tuple | None]:
    suffix = p.suffix.lower()
    if _is_nifti(p):
        a = read_nifti_volume(p)
        if a.shape[0] != 1:
            raise DataError(f"{p}: a CSV row must be a 2-D image, this NIfTI has {a.shape[0]} "
                            "slices (use a volume folder instead)")
        return a[0], None, None
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), None, None
    if suffix in (".dcm", ".dicom", ""):
        import pydicom
        from pydicom.pixels import apply_modality_lut
        ds = pydicom.dcmread(p)
        arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        window = None
        if "WindowCenter" in ds and "WindowWidth" in ds:
            c, w = ds.WindowCenter, ds.WindowWidth
            c = c[0] if isinstance(c, pydicom.multival.MultiValue) else c
            w = w[0] if isinstance(w, pydicom.multival.MultiValue) else w
            window = (float(c), float(w))
        return arr, str(ds.get("Modality", "")) or None, window
    if suffix in IMAGE_EXTS:
        from skimage.io import imread
        return imread(p), None, None
    raise DataError(f"{p}: unsupported image type {suffix!r}")


def parse_label(value: str, class_names: Sequence[str] | None = None, where: str = "") -> int:
    """A CSV label -> class index: integers pass, class names map to their index,
    positive/negative words (the official ``convert_label``) to 1/0."""
    v = str(value).strip()
    try:
        f = float(v)
    except ValueError:
        f = None
    if f is not None:
        if not math.isfinite(f) or f != int(f):
            raise DataError(f"{where}: label {v!r} is not an integer class")
        return int(f)
    low = v.lower()
    if class_names:
        names = [c.lower() for c in class_names]
        if low in names:
            return names.index(low)
    if low in POSITIVE_WORDS:
        return 1
    if low in NEGATIVE_WORDS:
        return 0
    raise DataError(f"{where}: cannot interpret label {v!r} (use class ids, class names "
                    f"{list(class_names or [])}, or positive/negative)")


class CSVDataset(SliceDataset):
    """The official CSV layout: ``image,mask`` (segmentation) or ``image,label`` (classification).

    Relative paths are resolved against the CSV's folder, then the working
    directory. An optional ``group`` column (patient/volume id) keeps slices of
    one patient in one fold.
    """

    def __init__(self, csv_path: str | os.PathLike, task: str | None = None,
                 prep: Preprocessing | None = None, class_names: Sequence[str] | None = None,
                 modality: str | None = None):
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise DataError(f"{self.csv_path}: CSV file not found")
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
        if "image" not in cols:
            raise DataError(f"{self.csv_path}: needs an 'image' column (found {cols})")
        inferred = ("segmentation" if "mask" in cols
                    else "classification" if "label" in cols else None)
        if inferred is None:
            raise DataError(f"{self.csv_path}: needs a 'mask' or 'label' column (found {cols})")
        if task is not None and task != inferred:
            raise DataError(f"{self.csv_path}: task {task!r} needs a "
                            f"{'mask' if task == 'segmentation' else 'label'} column "
                            f"(found {cols})")
        super().__init__(inferred, prep)
        self.modality = modality
        self.rows = []
        for k, r in enumerate(rows, start=2):
            where = f"{self.csv_path.name} line {k}"
            img = self._resolve(r["image"], where)
            if inferred == "segmentation":
                target = self._resolve(r["mask"], where)
            else:
                target = parse_label(r["label"], class_names, where)
            self.rows.append((img, target, r.get("group") or str(img)))

    def _resolve(self, p: str, where: str) -> Path:
        if not p:
            raise DataError(f"{where}: empty path")
        path = Path(p)
        if path.is_absolute():
            return path
        for base in (self.csv_path.parent, Path.cwd()):
            if (base / path).exists():
                return base / path
        return self.csv_path.parent / path  # reported as missing when loaded

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> SliceSample:
        img_path, target, group = self.rows[i]
        arr, modality, window = read_slice_file(img_path)
        img = _check_image(arr, str(img_path))
        if self.task == "segmentation":
            m, _, _ = read_slice_file(target)
            target = _check_mask(m, img.shape, f"{img_path.name} / {Path(target).name}")
        return SliceSample(img, target, img_path.name, self.modality or modality, window, group)

    def label(self, i: int) -> int:
        return int(self.rows[i][1]) if self.task == "classification" else -1

    def group(self, i: int) -> str:
        return self.rows[i][2]


def fold_csv_paths(csv_dir: str | os.PathLike, fold: int, percent: int | None = None) -> dict:
    """``{train,val,test}_fold{N}.csv`` (train: ``{percent}_train_fold{N}.csv`` when given)."""
    d = Path(csv_dir)
    out = {"train": d / (f"{percent}_train_fold{fold}.csv" if percent else f"train_fold{fold}.csv"),
           "val": d / f"val_fold{fold}.csv", "test": d / f"test_fold{fold}.csv"}
    if not out["train"].is_file():
        raise DataError(f"{out['train']}: fold file not found")
    return {k: v for k, v in out.items() if v.is_file()}


class VolumeFolderDataset(SliceDataset):
    """Volumes in ``image_dir`` (NIfTI files or DICOM series folders) with label volumes
    of the same name in ``label_dir`` (``case1.nii.gz`` or ``case1/`` <-> ``case1.nii.gz``),
    sliced along z into 2-D samples.

    ``skip_empty`` drops slices without foreground. NIfTI carries no modality:
    pass ``modality='CT'`` for HU data (the card's ``ct_window`` then applies).
    Without ``label_dir`` the slices are unlabelled (pretraining, prediction).
    """

    def __init__(self, image_dir: str | os.PathLike, label_dir: str | os.PathLike | None = None,
                 task: str = "segmentation", prep: Preprocessing | None = None,
                 modality: str | None = None, window: tuple[float, float] | None = None,
                 skip_empty: bool = False):
        super().__init__(task, prep)
        if task != "segmentation":
            raise DataError("volume folders hold segmentation data; use a CSV for classification")
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        self.modality, self.window = modality, window
        images = {_volume_key(p): p for p in sorted(self.image_dir.iterdir())
                  if not p.name.startswith(".") and (_is_nifti(p) or p.is_dir())}
        labels = {}
        if label_dir is not None:
            ld = Path(label_dir)
            if not ld.is_dir():
                raise DataError(f"{ld}: label folder not found")
            labels = {_volume_key(p): p for p in sorted(ld.iterdir()) if _is_nifti(p)}
            missing = sorted(set(images) - set(labels))
            if missing:
                raise DataError(f"no label volume for {missing[:5]} in {ld}")
        self.volumes = []  # (name, array, modality, window, labels)
        self.index = []  # (volume, z)
        for key, p in images.items():
            arr, mod, win = self._read(p)
            lab = None
            if labels:
                lab = read_nifti_volume(labels[key])
                if lab.shape != arr.shape:
                    raise DataError(f"{key}: label volume shape {lab.shape} does not match image "
                                    f"volume shape {arr.shape}")
                lab = _check_mask(lab.reshape(lab.shape[0], -1),
                                  arr.reshape(arr.shape[0], -1).shape,
                                  key).reshape(lab.shape)
            v = len(self.volumes)
            self.volumes.append((key, arr, mod or modality, window or win, lab))
            for z in range(arr.shape[0]):
                if skip_empty and lab is not None and not lab[z].any():
                    continue
                self.index.append((v, z))

    def _read(self, p: Path):
        if _is_nifti(p):
            return read_nifti_volume(p).astype(np.float32), None, None
        try:
            from training.io import read_image  # DICOM series reader (training.io)
        except ImportError:
            raise DataError(f"{p}: reading DICOM series needs training.io.read_image, which this "
                            "installation lacks; convert the series to NIfTI or update "
                            "napari-vismae") from None
        try:
            vols = read_image(p)
        except ImageReadError as e:
            raise DataError(f"{p}: no readable image series ({e.path}: {e.reason})") from None
        if not vols:
            raise DataError(f"{p}: no image volume found")
        v = vols[0]
        return (np.asarray(v.array, np.float32), getattr(v, "modality", None),
                getattr(v, "window", None))

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> SliceSample:
        v, z = self.index[i]
        key, arr, mod, win, lab = self.volumes[v]
        return SliceSample(arr[z], None if lab is None else lab[z], f"{key}[z={z}]", mod, win, key,
                           arr)

    def group(self, i: int) -> str:
        return self.volumes[self.index[i][0]][0]


def _volume_key(p: Path) -> str:
    n = p.name
    for ext in (".nii.gz", ".nii"):
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return n
