"""Fine-tuning datasets: a CSV of files, folders of volumes, or in-memory arrays.

Every dataset yields :class:`SliceSample` objects (one 2-D image with raw
intensities, its mask or class label, modality and window), and every sample
goes through the same :func:`prepare_sample`, which applies
:func:`training.data.preprocessing.scale_to_unit` and the model-card resize: the
preprocessing used in pretraining and inference. Items are
``(image (1, S, S) float32 in [0, 1], target)`` with ``S = prep.input_size``;
the target is a (S, S) int64 mask (nearest-neighbour resized) or a scalar
int64 class (-1 when unlabelled). Standardisation (mean/std) happens in the
training loop after augmentation (:func:`training.data.preprocessing.to_model_input`).

Sources:

* :class:`CSVDataset`: the official layout, columns ``image,mask`` or
  ``image,label`` (``{train,val,test}_fold{N}.csv``, optionally prefixed by a
  data percentage; see :func:`fold_csv_paths`).
* :class:`VolumeFolderDataset`: NIfTI files or DICOM series folders with label
  volumes of the same name, sliced along z.
* :class:`ArrayDataset`: numpy arrays (what the napari plugin passes).
"""
from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from training.data.preprocessing import (
    Preprocessing,
    cached_volume_limits,
    scale_to_unit,
    to_model_input,
)

TASKS = ("segmentation", "classification")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_EXTS = (".nii", ".nii.gz")
# The official classification CSV reader maps these words to 1 ("convert_label").
POSITIVE_WORDS = {"positive", "yes", "malignant", "true", "abnormal"}
NEGATIVE_WORDS = {"negative", "no", "benign", "false", "normal"}


class DataError(ValueError):
    """Input data that cannot be used; the message names the sample and the problem."""


@dataclass
class SliceSample:
    """One 2-D training example before preprocessing."""

    image: np.ndarray  # (H, W) raw intensities (HU for CT)
    target: np.ndarray | int | None  # (H, W) integer mask, a class index, or None
    name: str = ""
    modality: str | None = None
    window: tuple[float, float] | None = None  # (center, width) from the file header
    group: str = ""  # the volume / patient the slice belongs to (keeps splits leak-free)
    volume: np.ndarray | None = None  # the whole volume, for per-volume percentiles


def _check_image(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A) export -> grey
        a = a[..., :3].astype(np.float32).mean(-1)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise DataError(f"{name}: expected a 2-D image, got shape {a.shape}")
    return a


def _check_mask(m: np.ndarray, image_shape: tuple, name: str) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[-1] in (3, 4):
        m = m[..., 0]
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(image_shape):
        raise DataError(f"{name}: mask shape {m.shape} does not match image shape "
                        f"{tuple(image_shape)}")
    if np.issubdtype(m.dtype, np.floating):
        if not np.all(np.isfinite(m)):
            raise DataError(f"{name}: mask contains NaN or infinite values")
        r = np.rint(m)
        if np.abs(m - r).max(initial=0) > 1e-3:
            raise DataError(f"{name}: mask holds non-integer values; masks must be class ids")
        m = r
    if m.min(initial=0) < 0:
        raise DataError(f"{name}: mask has negative class ids ({int(m.min())})")
    return m.astype(np.int64)


def resize_unit(unit: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> ``input_size``², the same resampling as :func:`to_model_input`."""
    return to_model_input(unit, dataclasses.replace(prep, mean=0.0, std=1.0))


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) int mask -> (size, size), nearest neighbour (pixel-centre exact)."""
    if mask.shape[-2:] == (size, size):
        return mask
    return F.interpolate(mask[None, None].float(), size=(size, size),
                         mode="nearest-exact")[0, 0].long()


def prepare_sample(sample: SliceSample, prep: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """The single preprocessing path: raw slice -> ([0, 1] image (1, S, S), target)."""
    limits = None if sample.volume is None else cached_volume_limits(sample.volume, prep,
                                                                      sample.modality)
    unit = scale_to_unit(sample.image, prep, sample.modality, sample.window, limits)
    image = resize_unit(torch.from_numpy(unit)[None, None], prep)[0].clamp_(0.0, 1.0)
    if sample.target is None:
        target = torch.tensor(-1, dtype=torch.int64)
    elif isinstance(sample.target, np.ndarray) and sample.target.ndim == 2:
        target = resize_mask(torch.from_numpy(np.ascontiguousarray(sample.target)),
                             prep.input_size)
    else:
        target = torch.tensor(int(sample.target), dtype=torch.int64)
    return image.contiguous(), target


class SliceDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load(i) -> SliceSample``."""

    task: str = "segmentation"

    def __init__(self, task: str, prep: Preprocessing | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        self.task = task
        self.prep = prep or Preprocessing()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> SliceSample:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return prepare_sample(self.load(i), self.prep)

    def group(self, i: int) -> str:
        """The volume/patient of item ``i`` (items of one group never straddle a split)."""
        return self.load(i).group or str(i)

    def groups(self) -> list[str]:
        return [self.group(i) for i in range(len(self))]

    def label(self, i: int) -> int:
        """Class of item ``i`` (classification)."""
        t = self.load(i).target
        return -1 if t is None else int(t)

    def labels(self) -> np.ndarray:
        return np.array([self.label(i) for i in range(len(self))], dtype=np.int64)

    def with_prep(self, prep: Preprocessing) -> SliceDataset:
        """The same data with another preprocessing (e.g. the model card's)."""
        other = self.__class__.__new__(self.__class__)
        other.__dict__.update(self.__dict__)
        other.prep = prep
        return other

    def subset(self, indices: Sequence[int]) -> SubsetDataset:
        return SubsetDataset(self, indices)

    def validate(self, num_classes: int | None = None, what: str = "dataset") -> None:
        """Raise :class:`DataError` for an empty set, or targets outside ``0..num_classes-1``.

        Warns when a segmentation set has no foreground at all or a
        classification set holds a single class.
        """
        n = len(self)
        if n == 0:
            raise DataError(f"the {what} is empty (no images found)")
        bad, seen = [], set()
        for i in range(n):
            s = self.load(i)
            if s.target is None:
                raise DataError(f"{what}: item {i} ({s.name}) has no mask/label")
            vals = np.unique(s.target) if isinstance(s.target, np.ndarray) else [int(s.target)]
            seen.update(int(v) for v in vals)
            if num_classes is not None and (max(vals) >= num_classes or min(vals) < 0):
                bad.append(f"{s.name or i}: values {sorted(int(v) for v in vals)}")
        if bad:
            raise DataError(f"{what}: {len(bad)} item(s) have labels outside 0..{num_classes - 1} "
                            f"for a {num_classes}-class model: " + "; ".join(bad[:5])
                            + (" ..." if len(bad) > 5 else ""))
        if self.task == "segmentation" and seen <= {0}:
            warnings.warn(f"{what}: no foreground pixel in any mask", stacklevel=2)
        if self.task == "classification" and len(seen) < 2:
            warnings.warn(f"{what}: every item has class {sorted(seen)}; AUC will be undefined",
                          stacklevel=2)


class SubsetDataset(SliceDataset):
    """Items ``indices`` of another :class:`SliceDataset`."""

    def __init__(self, base: SliceDataset, indices: Sequence[int]):
        super().__init__(base.task, base.prep)
        self.base = base
        self.indices = [int(i) for i in indices]
        if self.indices and (min(self.indices) < 0 or max(self.indices) >= len(base)):
            raise IndexError("subset index out of range")

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> SliceSample:
        return self.base.load(self.indices[i])

    def __getitem__(self, i: int):
        return prepare_sample(self.load(i), self.prep)

    def group(self, i: int) -> str:
        return self.base.group(self.indices[i])

    def label(self, i: int) -> int:
        return self.base.label(self.indices[i])


# -- in memory ----------------------------------------------------------------------------------
class ArrayDataset(SliceDataset):
    """Numpy images (2-D slices or 3-D (z, y, x) volumes, sliced) with masks or labels.

    ``images``: an (N, H, W) array or a list of 2-D/3-D arrays. ``targets``:
    masks of the same shapes (segmentation), one int per image
    (classification), or None (unlabelled, e.g. for MAE pretraining).
    """

    def __init__(self, images, targets=None, task: str = "segmentation",
                 prep: Preprocessing | None = None, modality: str | None = None,
                 window: tuple[float, float] | None = None, names: Sequence[str] | None = None):
        super().__init__(task, prep)
        imgs = list(images) if not isinstance(images, np.ndarray) or images.ndim != 2 else [images]
        if targets is not None and not isinstance(targets, (list, tuple, np.ndarray)):
            raise DataError("targets must be a sequence aligned with images")
        tg = None if targets is None else list(targets)
        if tg is not None and len(tg) != len(imgs):
            raise DataError(f"{len(imgs)} images but {len(tg)} targets")
        self.modality, self.window = modality, window
        self.items: list[tuple] = []  # (image, target, name, group, volume or None)
        for k, img in enumerate(imgs):
            name = names[k] if names is not None else f"image {k}"
            img = np.asarray(img)
            t = None if tg is None else tg[k]
            if img.ndim == 3 and img.shape[-1] not in (3, 4):  # a volume: slice it
                if t is not None and task == "segmentation":
                    t = np.asarray(t)
                    if t.shape != img.shape:
                        raise DataError(f"{name}: mask shape {t.shape} does not match image "
                                        f"shape {img.shape}")
                for z in range(img.shape[0]):
                    tz = t[z] if (t is not None and task == "segmentation") else t
                    self._add(img[z], tz, f"{name}[z={z}]", name, img)
            else:
                self._add(img, t, name, name)

    def _add(self, img, t, name, group, volume=None):
        img = _check_image(img, name)
        if t is not None:
            if self.task == "segmentation":
                t = _check_mask(t, img.shape, name)
            else:
                t = int(t)
        self.items.append((img, t, name, group, volume))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> SliceSample:
        img, t, name, group, volume = self.items[i]
        return SliceSample(img, t, name, self.modality, self.window, group, volume)

    def label(self, i: int) -> int:
        t = self.items[i][1]
        return -1 if t is None else int(t)

    def group(self, i: int) -> str:
        return self.items[i][3]


# -- files ------------------------------------------------------------------------------------------
def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_EXTS)


def read_slice_file(path: str | os.PathLike) -> tuple[np.ndarray, str | None, tuple | None]:
    """A 2-D image file -> (array, modality, window). PNG/JPG/TIFF, .npy, 2-D NIfTI, one DICOM file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if _is_nifti(p):
        from training.data.synthetic import read_nifti
        a, _ = read_nifti(p)
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
        if f != int(f):
            raise DataError(f"{where}: label {v!r} is not an integer class")
        return int(f)
    except ValueError:
        pass
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
        inferred = "segmentation" if "mask" in cols else "classification" if "label" in cols else None
        if inferred is None:
            raise DataError(f"{self.csv_path}: needs a 'mask' or 'label' column (found {cols})")
        if task is not None and task != inferred:
            raise DataError(f"{self.csv_path}: task {task!r} needs a "
                            f"{'mask' if task == 'segmentation' else 'label'} column (found {cols})")
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
                from training.data.synthetic import read_nifti
                lab, _ = read_nifti(labels[key])
                if lab.shape != arr.shape:
                    raise DataError(f"{key}: label volume shape {lab.shape} does not match image "
                                    f"volume shape {arr.shape}")
                lab = _check_mask(lab.reshape(lab.shape[0], -1), arr.reshape(arr.shape[0], -1).shape,
                                  key).reshape(lab.shape)
            v = len(self.volumes)
            self.volumes.append((key, arr, mod or modality, window or win, lab))
            for z in range(arr.shape[0]):
                if skip_empty and lab is not None and not lab[z].any():
                    continue
                self.index.append((v, z))

    def _read(self, p: Path):
        if _is_nifti(p):
            from training.data.synthetic import read_nifti
            arr, _ = read_nifti(p)
            return arr.astype(np.float32), None, None
        try:
            from training.io import read_image  # DICOM series reader (training.io)
        except ImportError:
            raise DataError(f"{p}: reading DICOM series needs training.io.read_image, which this "
                            "installation lacks; convert the series to NIfTI or update "
                            "napari-vismae") from None
        vols = read_image(p)
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
