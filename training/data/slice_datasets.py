"""Slice datasets: the sample type, the one ``prepare_sample`` path, the dataset base
class, subsets and in-memory arrays (what the napari plugin passes)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from training.data.preprocessing import (
    Preprocessing,
    cached_volume_limits,
    resize_unit,  # noqa: F401 - re-exported (training.data.datasets.resize_unit)
    scale_to_unit,
)

TASKS = ("segmentation", "classification")


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
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name}: image values of type {a.dtype} cannot be used "
                        "(real numbers needed)")
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).any():
        raise DataError(f"{name}: every pixel is NaN or infinite")
    return a


def class_label(t, name: str) -> int:
    """A classification target as an int; a non-integer value (1.5, NaN, '2') is refused
    instead of being truncated."""
    v = t.item() if isinstance(t, np.ndarray) and t.size == 1 else t
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return int(v)
    raise DataError(f"{name}: class label {v!r:.40} is not an integer class index")


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

    def images(self) -> torch.Tensor:
        """Every image at model resolution in [0, 1], stacked: (N, 1, S, S) (the targets are
        not read into the result; e.g. the unlabelled pool of an MAE)."""
        return torch.stack([self[i][0] for i in range(len(self))])

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
        ranges: dict[str, list] = {}  # group -> [min, max, first item's name]
        for i in range(n):
            s = self.load(i)
            if s.target is None:
                raise DataError(f"{what}: item {i} ({s.name}) has no mask/label")
            img = np.asarray(s.image, dtype=np.float64)
            finite = img[np.isfinite(img)]
            lo, hi = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
            key = s.group or s.name or str(i)
            r = ranges.setdefault(key, [lo, hi, key])
            if np.isnan(r[0]):
                r[0], r[1] = lo, hi
            elif not np.isnan(lo):
                r[0], r[1] = min(r[0], lo), max(r[1], hi)
            vals = np.unique(s.target) if isinstance(s.target, np.ndarray) else [int(s.target)]
            seen.update(int(v) for v in vals)
            if num_classes is not None and (max(vals) >= num_classes or min(vals) < 0):
                bad.append(f"{s.name or i}: values {sorted(int(v) for v in vals)}")
        if bad:
            raise DataError(f"{what}: {len(bad)} item(s) have labels outside 0..{num_classes - 1} "
                            f"for a {num_classes}-class model: " + "; ".join(bad[:5])
                            + (" ..." if len(bad) > 5 else ""))
        flat = [f"{r[2]} (every pixel {r[0]:g})" if np.isfinite(r[0]) else f"{r[2]} (all NaN)"
                for r in ranges.values() if not r[0] < r[1]]
        if flat:
            raise DataError(f"{what}: {len(flat)} image(s)/volume(s) hold no contrast to learn "
                            "from: " + "; ".join(flat[:5]) + (" ..." if len(flat) > 5 else ""))
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
                t = class_label(t, name)
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


# -- prepared-item cache -------------------------------------------------------------------------
class CacheBudget:
    """Bytes that a group of :class:`CachedDataset` may hold together (shared, first come)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.used = int(max_bytes), 0

    def take(self, n: int) -> bool:
        if self.used + n > self.max_bytes:
            return False
        self.used += n
        return True


class CachedDataset(SliceDataset):
    """``base`` whose prepared items (model-resolution image and target) are kept after
    their first use, up to a byte budget; items past it are prepared on every call.

    Fine-tuning visits every slice each epoch and the validation set at every validation;
    preparing a 512² slice (scaling, antialiased resize, mask resize) costs more than the
    cached copy. Images are kept as float32 (exact), masks as uint8 when they fit
    (``S² · 5`` bytes a segmentation item: 245 KiB at 224 px, ~4,300 slices a GiB).
    Items are returned as the uncached path returns them; callers must not modify them in
    place (the training loop stacks them into a new batch before augmenting).
    """

    def __init__(self, base: SliceDataset, budget: CacheBudget | int):
        super().__init__(base.task, base.prep)
        self.base = base
        self.budget = budget if isinstance(budget, CacheBudget) else CacheBudget(budget)
        self._items: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._names: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.base)

    def load(self, i: int) -> SliceSample:
        return self.base.load(i)

    def group(self, i: int) -> str:
        return self.base.group(i)

    def label(self, i: int) -> int:
        return self.base.label(i)

    def with_prep(self, prep: Preprocessing) -> CachedDataset:
        return CachedDataset(self.base.with_prep(prep), self.budget)

    @property
    def cached_bytes(self) -> int:
        return sum(x.nbytes + t.nbytes for x, t in self._items.values())

    def item_name(self, i: int) -> str:
        if i not in self._names:
            self._names[i] = self.base.load(i).name
        return self._names[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._items.get(i)
        if hit is not None:
            image, target = hit
            return image, target.long()
        sample = self.base.load(i)
        self._names[i] = sample.name
        image, target = prepare_sample(sample, self.prep)
        small = target
        if target.ndim and target.numel() and 0 <= int(target.min()) and int(target.max()) < 256:
            small = target.to(torch.uint8)
        if self.budget.take(image.nbytes + small.nbytes):
            self._items[i] = (image, small)
        return image, target
