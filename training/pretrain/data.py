"""Pretraining data: sharded uint8 slices (``python -m training.prepare``) or a plain image folder.

Every sample is a function of ``(index, epoch, seed)`` alone: the augmentation
(:class:`training.data.augment.PretrainAugment`: random resized crop, rotation, flip,
intensity jitter; or only the flip when ``augment`` is None) and the masking noise come
from a generator seeded by those, never from global state.
Together with :class:`EpochSampler` this makes a run exactly reproducible and
resumable mid-epoch, and makes N processes with batch b see exactly what one
process with batch N·b sees.
"""
from __future__ import annotations

import bisect
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.data.augment import PretrainAugment, pretrain_augment
from training.data.preprocessing import Preprocessing, grey, unit_slices

log = logging.getLogger(__name__)

SHARD_FORMAT = "napari-vismae-shards/1"
MANIFEST = "manifest.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_000_007 + index)


class EpochSampler(Sampler):
    """Shuffles per epoch (seeded), shards across ranks like DistributedSampler, and can
    start part-way into an epoch. Yields ``(index, epoch)`` so datasets can seed per sample.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if n < world_size:
            raise ValueError(f"{n} samples cannot be split across {world_size} processes")
        self.n, self.rank, self.world_size = n, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """``start``: samples of this rank already consumed in ``epoch`` (resume)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.world_size - self.start

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        order = order[: (self.n // self.world_size) * self.world_size]  # drop the ragged tail
        mine = order[self.rank::self.world_size][self.start:]
        return iter([(int(i), self.epoch) for i in mine])


class _PretrainDataset(Dataset):
    """Common part: augmentation (or just a flip) + masking noise per sample; subclasses
    implement ``load(i)``."""

    def __init__(self, image_size: int, num_mask_units: int, seed: int, flip: bool,
                 augment: PretrainAugment | None = None):
        self.image_size, self.num_mask_units = image_size, num_mask_units
        self.seed, self.flip, self.augment = seed, flip, augment

    def load(self, index: int) -> np.ndarray:  # (S, S) float32 in [0, 1]
        raise NotImplementedError

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        g = sample_generator(self.seed, epoch, index)
        ok = True
        try:
            image = self.load(index)
        except Exception as e:  # unreadable file: count it, substitute a neighbour, keep going
            log.warning("skipping unreadable sample %s: %s", self.describe(index), e)
            ok, image = False, self._substitute(index)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        if self.augment is not None:
            x = pretrain_augment(x, self.augment, g)
        elif self.flip and torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        noise = torch.rand(self.num_mask_units, generator=g)
        return x, noise, ok

    def _substitute(self, index: int) -> np.ndarray:
        for k in range(1, 11):
            try:
                return self.load((index + k) % len(self))
            except Exception:
                continue
        return np.zeros((self.image_size, self.image_size), np.float32)

    def describe(self, index: int) -> str:
        return str(index)


class ShardDataset(_PretrainDataset):
    """Memory-mapped uint8 shards ``(N, S, S)`` listed in ``manifest.json``; ``prep`` is the
    :class:`Preprocessing` ``prepare`` applied (recorded in the manifest)."""

    def __init__(self, root: str | Path, num_mask_units: int = 196, seed: int = 0,
                 flip: bool = True, augment: PretrainAugment | None = None):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if "preprocessing" in manifest:
            self.prep = Preprocessing.from_dict(manifest["preprocessing"])
        else:  # shards from before the manifest recorded it: header CT windows, volume percentiles
            log.warning("%s: the manifest does not record its preprocessing (older prepare); "
                        "assuming header CT windows and per-volume percentiles", self.root)
            self.prep = Preprocessing(input_size=manifest["image_size"], ct_window=None,
                                      percentile_scope="volume")
        self.shards = [s for s in manifest["shards"] if s["count"] > 0]
        check_shards(self.root, self.shards)
        self.offsets = np.cumsum([0] + [s["count"] for s in self.shards]).tolist()
        super().__init__(manifest["image_size"], num_mask_units, seed, flip, augment)
        self._arrays: dict[int, np.ndarray] = {}
        self.modalities = manifest.get("counts_per_modality", {})

    def __len__(self) -> int:
        return self.offsets[-1]

    def _array(self, k: int) -> np.ndarray:
        if k not in self._arrays:  # opened lazily, so each DataLoader worker maps its own
            self._arrays[k] = np.load(self.root / self.shards[k]["file"], mmap_mode="r")
        return self._arrays[k]

    def load(self, index: int) -> np.ndarray:
        k = bisect.bisect_right(self.offsets, index) - 1
        return self._array(k)[index - self.offsets[k]].astype(np.float32) / 255.0


class ImageFolderDataset(_PretrainDataset):
    """Every 2-D image below ``root`` (PNG, JPEG, TIFF, BMP, NPY) through ``prep`` (default
    :class:`Preprocessing` at ``image_size``): grey, percentiles, resize, as at inference."""

    def __init__(self, root: str | Path, image_size: int = 224, num_mask_units: int = 196,
                 seed: int = 0, flip: bool = True, prep: Preprocessing | None = None,
                 augment: PretrainAugment | None = None):
        self.root = Path(root)
        self.prep = prep or Preprocessing(input_size=image_size)
        if self.prep.input_size != image_size:
            raise ValueError(f"preprocessing input size {self.prep.input_size} != {image_size}")
        self.files = sorted(p for p in self.root.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        super().__init__(image_size, num_mask_units, seed, flip, augment)
        self.modalities = {"unknown": len(self.files)}

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> np.ndarray:
        return load_2d_unit(self.files[index], self.prep)


def load_2d_unit(path: Path, prep: Preprocessing) -> np.ndarray:
    """A 2-D image file -> (S, S) float32 in [0, 1] through ``prep`` (no modality: percentiles,
    or the card's ``modality``), exactly as inference would preprocess it."""
    from skimage.io import imread

    img = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else imread(path)
    img = grey(img)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    return unit_slices(img, prep)[0, 0].numpy()


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root}: no {MANIFEST} (run python -m training.prepare first, "
                                "or point --data at a folder of images)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: unknown shard format {manifest.get('format')!r}")
    return manifest


def check_shards(root: Path, shards: list[dict]) -> None:
    """Every shard the manifest lists must be a file inside ``root``: a shard elsewhere
    (``../``, an absolute path, a link out) or a missing one is refused, naming it."""
    base = Path(root).resolve()
    outside, missing = [], []
    for s in shards:
        p = (base / str(s.get("file", ""))).resolve()
        if not p.is_relative_to(base) or p == base:
            outside.append(str(s.get("file")))
        elif not p.is_file():
            missing.append(str(s.get("file")))
    if outside:
        raise ValueError(f"{base / MANIFEST}: shard paths must stay inside {base}: {outside[:5]}")
    if missing:
        raise ValueError(f"{base / MANIFEST}: {len(missing)} of {len(shards)} shards are missing "
                         f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); "
                         "rerun python -m training.prepare")


def open_dataset(data: str | Path, image_size: int, num_mask_units: int, seed: int,
                 augment: PretrainAugment | None = None, flip: bool = True):
    """Shards if ``data`` holds a manifest, else a folder of images. The dataset's ``prep`` is
    the preprocessing its images went through (pretraining records it in the model card).
    ``augment`` None: only a horizontal flip (when ``flip``)."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such file or directory")
    if (data / MANIFEST).is_file():
        ds = ShardDataset(data, num_mask_units, seed, flip, augment)
        if ds.image_size != image_size:
            raise ValueError(f"{data}: shards are {ds.image_size}px but the model takes "
                             f"{image_size}px")
        return ds
    return ImageFolderDataset(data, image_size, num_mask_units, seed, flip, augment=augment)


class IndexSubset(Dataset):
    """``dataset`` restricted to ``indices`` (training images when some are held out for the
    input-use check); items ``(i, epoch)`` map to ``(indices[i], epoch)``, so a sample keeps
    the seed of its index in the full dataset."""

    def __init__(self, dataset: _PretrainDataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.prep = dataset.prep
        self.modalities = getattr(dataset, "modalities", {})

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        return self.dataset[(self.indices[index], epoch)]
