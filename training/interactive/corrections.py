"""The user's corrections as a training set: which slices of a study were corrected, and how.

A :class:`CorrectionSet` holds one study (an image volume or a 2-D image), the
labels the user edited (segmentation) or the classes they tagged slices with
(classification), and the indices of the slices that count as corrected. Only
those slices become training data (:meth:`CorrectionSet.to_dataset`): a slice
the model predicted but nobody checked must not teach the model its own
mistakes.

A study is identified by :func:`study_key`: the DICOM SeriesInstanceUID when
the reader found one, else a SHA-256 of the pixel data and shape. Neither
contains a patient name, so keys can be written into model cards and file
names.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from training.data.datasets import ArrayDataset, DataError
from training.data.preprocessing import Preprocessing

VALIDATION_MODES = ("auto", "none")


class CorrectionError(DataError):
    """A training set that cannot be used (empty, a single class, ...); the message says why."""


def content_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes (hex)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def study_key(image: np.ndarray, metadata: Mapping | None = None) -> str:
    """``'uid:<SeriesInstanceUID>'`` from reader metadata, else ``'sha256:<content hash>'``."""
    meta = metadata or {}
    uid = meta.get("series_uid") or meta.get("SeriesInstanceUID")
    if not uid:
        dicom = meta.get("dicom") if isinstance(meta.get("dicom"), Mapping) else {}
        uid = dicom.get("series_uid") or dicom.get("SeriesInstanceUID")
    if uid:
        return f"uid:{uid}"
    return f"sha256:{content_hash(np.asarray(image))}"


def key_digest(key: str) -> str:
    """A short, file-name-safe digest of a study key."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass
class CorrectionSet:
    """One study's corrections.

    ``image``: (y, x) or (z, y, x) raw intensities. ``labels``: the same shape
    (segmentation; the user's labels layer). ``corrected``: slice indices that
    count as corrected (painted on, or marked reviewed). ``tags``: slice index
    -> class (classification); tagging a whole study tags every slice.
    """

    image: np.ndarray
    labels: np.ndarray | None = None
    corrected: set[int] = field(default_factory=set)
    tags: dict[int, int] = field(default_factory=dict)
    key: str = ""
    task: str = "segmentation"
    modality: str | None = None
    window: tuple[float, float] | None = None
    # a compact set holding only some slices of a study: {"shape": the study's shape,
    # "slices": the study's index of each slice here, "image_sha256": of the whole study}
    origin: dict | None = None

    def __post_init__(self):
        self.image = np.asarray(self.image)
        if self.image.ndim not in (2, 3):
            raise CorrectionError(f"expected a 2-D image or a (z, y, x) volume, got shape "
                                  f"{self.image.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != self.image.shape:
                raise CorrectionError(f"labels shape {self.labels.shape} does not match image "
                                      f"shape {self.image.shape}")
        self.corrected = {int(i) for i in self.corrected}
        self.tags = {int(k): int(v) for k, v in self.tags.items()}
        if not self.key:
            self.key = study_key(self.image)

    # -- slices ------------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return 1 if self.image.ndim == 2 else self.image.shape[0]

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_slices:
            raise IndexError(f"slice {i} outside 0..{self.n_slices - 1}")
        return i

    def mark(self, slices: int | Iterable[int]) -> None:
        for i in [slices] if isinstance(slices, (int, np.integer)) else slices:
            self.corrected.add(self._check(i))

    def unmark(self, slices: int | Iterable[int]) -> None:
        for i in [slices] if isinstance(slices, (int, np.integer)) else slices:
            self.corrected.discard(int(i))

    def tag(self, slices: int | Iterable[int] | None, cls: int) -> None:
        """Tag slices (None: the whole study) with class ``cls`` (classification)."""
        if slices is None:
            slices = range(self.n_slices)
        for i in [slices] if isinstance(slices, (int, np.integer)) else slices:
            self.tags[self._check(i)] = int(cls)

    def untag(self, slices: int | Iterable[int]) -> None:
        for i in [slices] if isinstance(slices, (int, np.integer)) else slices:
            self.tags.pop(int(i), None)

    def training_slices(self) -> list[int]:
        """The slices that become training data, sorted."""
        return sorted(self.tags) if self.task == "classification" else sorted(self.corrected)

    def _slice(self, a: np.ndarray, i: int) -> np.ndarray:
        return a if a.ndim == 2 else a[i]

    # -- summaries ------------------------------------------------------------------------------
    def class_counts(self, num_classes: int | None = None) -> dict[int, int]:
        """Number of training slices containing each class (segmentation: background included)
        or tagged with it (classification)."""
        counts: dict[int, int] = {c: 0 for c in range(num_classes or 0)}
        if self.task == "classification":
            for c in self.tags.values():
                counts[c] = counts.get(c, 0) + 1
            return counts
        if self.labels is None:
            return counts
        for i in self.training_slices():
            for c in np.unique(self._slice(self.labels, i)):
                counts[int(c)] = counts.get(int(c), 0) + 1
        return counts

    def validate(self, num_classes: int | None = None) -> None:
        """Raise :class:`CorrectionError` with a clear message if this set cannot train a model."""
        validate_sets([self], num_classes)

    # -- datasets -------------------------------------------------------------------------------
    def to_dataset(self, prep: Preprocessing | None = None, slices: Sequence[int] | None = None,
                   modality: str | None = None, window: tuple[float, float] | None = None
                   ) -> ArrayDataset:
        """The training slices (or ``slices``) as an :class:`ArrayDataset`; names are
        ``'<key digest>[z=i]'`` (no layer names, which may hold patient names)."""
        idx = self.training_slices() if slices is None else [int(i) for i in slices]
        if self.task == "segmentation" and self.labels is None:
            raise CorrectionError("no labels to train on")
        images = [self._slice(self.image, i) for i in idx]
        if self.task == "classification":
            targets = [self.tags[i] for i in idx]
        else:
            # as stored: the dataset rounds integral floats and refuses fractional ones
            targets = [np.asarray(self._slice(self.labels, i)) for i in idx]
        names = [f"{key_digest(self.key)}[z={self._study_index(i)}]" for i in idx]
        return ArrayDataset(images, targets, task=self.task, prep=prep,
                            modality=modality or self.modality, window=window or self.window,
                            names=names)

    def _study_index(self, i: int) -> int:
        return int(self.origin["slices"][i]) if self.origin else int(i)

    def provenance(self, train: Sequence[int], val: Sequence[int]) -> dict:
        """What a model card records about this study: its key, never a name."""
        origin = self.origin or {}
        return {"study_key": self.key, "shape": list(origin.get("shape", self.image.shape)),
                "image_sha256": self.key[7:] if self.key.startswith("sha256:")
                else origin.get("image_sha256") or content_hash(self.image),
                "labels_sha256": content_hash(self.labels) if self.labels is not None else None,
                "train_slices": [self._study_index(i) for i in train],
                "val_slices": [self._study_index(i) for i in val]}


def validate_sets(sets: Sequence[CorrectionSet], num_classes: int | None = None) -> None:
    """Raise :class:`CorrectionError` for an empty or single-class training set, or labels
    outside the model's classes."""
    n = sum(len(s.training_slices()) for s in sets)
    if not sets or n == 0:
        raise CorrectionError("the training set is empty: paint corrections on some slices "
                              "(or mark them corrected) before fine-tuning")
    counts: dict[int, int] = {}
    for s in sets:
        for c, k in s.class_counts().items():
            counts[c] = counts.get(c, 0) + k
    present = sorted(c for c, k in counts.items() if k > 0)
    if num_classes is not None:
        bad = [c for c in present if c >= num_classes or c < 0]
        if bad:
            raise CorrectionError(f"the labels hold class(es) {bad}, but the model has "
                                  f"{num_classes} classes (0..{num_classes - 1})")
    task = sets[0].task
    if task == "segmentation" and present in ([], [0]):
        raise CorrectionError(f"the {n} corrected slice(s) contain only background: paint at "
                              "least one structure, or fine-tuning has nothing to learn")
    if task == "segmentation" and len(present) == 1:
        raise CorrectionError(f"the {n} corrected slice(s) contain a single class ({present[0]}) "
                              "and no background: a model cannot learn from one class")
    if task == "classification" and len(present) < 2:
        raise CorrectionError(f"every tagged slice has class {present}: tag slices of at least "
                              "two classes")


MIN_VALIDATION_SLICES = 3  # fewer corrected slices: "too few corrected slices to validate"


def kfold(items: Sequence, k: int = 3, seed: int = 0) -> list[list]:
    """``items`` shuffled (seeded) and dealt into ``min(k, len(items))`` folds of near-equal
    size; every item is in exactly one fold."""
    items = list(items)
    k = max(1, min(int(k), len(items)))
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [[items[i] for i in sorted(order[f::k])] for f in range(k)]


def validation_plan(n: int, mode: str = "auto") -> str:
    """How ``n`` corrected slices are validated: ``'k-fold'`` (``auto`` with at least
    :data:`MIN_VALIDATION_SLICES`), ``'too-few'`` (``auto`` with fewer) or ``'none'``."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {mode!r}")
    if mode == "none":
        return "none"
    return "k-fold" if n >= MIN_VALIDATION_SLICES else "too-few"
