"""Run a VIS-MAE model on an image or a volume: the engine behind the napari widgets.

Slices are preprocessed exactly as the model card says (CT window / percentiles ->
0-1 -> resize to the model input -> standardise), run in batches, and the
logits resized back to each slice's own size. The work is a generator that
yields progress after every batch, so a caller (a napari worker thread, a CLI
progress bar) can report it and stop it between batches; ``run`` consumes it.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.data.preprocessing import to_model_input, unit_slices
from training.interactive import CPU_BATCH
from training.interactive.ood import FeatureTap, reference_of, slice_scores
from training.runtime.device import autocast_for, drain, pick_device  # noqa: F401  (re-exported)
from training.weights.card import ModelCard


@dataclass
class Progress:
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / max(self.total, 1)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # like the input's spatial shape; uint8 class indices
    slices: list[int]  # slice indices that were segmented (all others untouched, 0)
    # (n_slices,) mean entropy (nats) inside the predicted foreground; None unless asked
    uncertainty: np.ndarray | None = None
    probabilities: np.ndarray | None = None  # (n_slices, classes, y, x) float16, if asked
    # (n_slices,) relative out-of-distribution score (training data <= 1, see
    # training.interactive.ood); None when the card has no reference statistics
    ood: np.ndarray | None = None


@dataclass
class ClassificationResult:
    probabilities: np.ndarray  # (n_slices, classes)
    slices: list[int]
    ood: np.ndarray | None = None  # (n_slices,) relative OOD score, as for segmentation

    def aggregate(self) -> np.ndarray:
        """Study-level probabilities: the mean over slices."""
        return self.probabilities.mean(0)


def _as_slices(image: np.ndarray) -> tuple[np.ndarray, bool]:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[None], True
    if image.ndim == 3:
        return image, False
    raise ValueError(f"expected a 2-D image or a 3-D volume (z, y, x), got shape {image.shape}")


def _batches(indices: Sequence[int], size: int):
    for i in range(0, len(indices), size):
        yield indices[i:i + size]


def _input_batch(vol: np.ndarray, idx: Sequence[int], card: ModelCard, modality, window,
                 device: torch.device) -> torch.Tensor:
    return to_model_input(unit_slices(vol, card.prep, modality, window, idx, device), card.prep)


def segment_steps(model, card: ModelCard, image: np.ndarray, *, slices: Sequence[int] | None = None,
                  modality: str | None = None, window: tuple[float, float] | None = None,
                  batch_size: int | None = None, device: str | torch.device = "cpu",
                  precision: str = "auto", keep_probabilities: bool = False,
                  uncertainty: bool = False) -> Generator[Progress, None, SegmentationResult]:
    """Segment ``image`` ((y, x) or (z, y, x), raw intensities, HU for CT) slice by slice.

    ``batch_size``: slices per forward pass; by default :func:`default_batch` (measured:
    on CPU larger batches cost as many CPU-seconds per slice and more memory).

    ``uncertainty``: also score each slice by the mean entropy inside its predicted
    foreground (active learning reads it; it costs a softmax per batch, so only on request).
    Yields :class:`Progress` after each batch; returns a :class:`SegmentationResult`.
    """
    if card.task != "segmentation":
        raise ValueError(f"model {card.name!r} is a {card.task} model, not a segmentation model")
    vol, was_2d, idx, device, model = _prepare(model, image, slices, device)
    batch_size = batch_size or default_batch(device)
    labels = np.zeros(vol.shape, np.uint8)
    scores = np.zeros(len(idx), np.float32) if uncertainty else None
    probs_out = (np.zeros((len(idx), card.num_classes, *vol.shape[1:]), np.float16)
                 if keep_probabilities else None)

    def step(batch, done):
        _segment_batch(model, vol, batch, card, modality, window, device, precision,
                       labels, scores, probs_out, done)

    ood = yield from _run_batches(model, card, idx, batch_size, step)
    return SegmentationResult(labels[0] if was_2d else labels, idx, scores, probs_out, ood)


def default_batch(device: str | torch.device) -> int:
    """Slices per batch for segmentation inference: :data:`CPU_BATCH` on CPU (chosen by
    ``python -m benchmarks.bench_models --cpu-batch``), 8 on an accelerator."""
    return CPU_BATCH if torch.device(device).type == "cpu" else 8


def _prepare(model, image: np.ndarray, slices, device):
    """-> (slices volume, was 2-D, checked slice indices, device, model on it in eval mode)."""
    vol, was_2d = _as_slices(image)
    if not np.issubdtype(vol.dtype, np.number):
        raise ValueError(f"image has non-numeric dtype {vol.dtype}")
    idx = list(range(vol.shape[0])) if slices is None else [int(i) for i in slices]
    bad = [i for i in idx if not 0 <= i < vol.shape[0]]
    if bad:
        raise ValueError(f"slice indices {bad[:5]} outside 0..{vol.shape[0] - 1}")
    device = torch.device(device) if not isinstance(device, torch.device) else device
    return vol, was_2d, idx, device, model.to(device).eval()


def _run_batches(model, card: ModelCard, idx: list[int], batch_size: int, step):
    """Call ``step(batch, done)`` for each batch of ``idx``, yielding :class:`Progress`;
    returns the per-slice OOD scores read from the encoder in the same pass (None when
    the card has no reference statistics)."""
    ref = reference_of(card)
    ood = np.zeros(len(idx), np.float32) if ref is not None else None
    tap = FeatureTap(model) if ref is not None else None
    done = 0
    try:
        yield Progress(0, len(idx))
        for batch in _batches(idx, batch_size):
            step(batch, done)
            if tap is not None:
                ood[done:done + len(batch)] = slice_scores(tap.take(), ref)
            done += len(batch)
            yield Progress(done, len(idx))
    finally:
        if tap is not None:
            tap.close()
    return ood


def _segment_batch(model, vol, batch, card, modality, window, device, precision, labels, scores,
                   probs_out, done) -> None:
    """One batch of :func:`segment_steps`: labels (and entropy / probabilities) in place."""
    x = _input_batch(vol, batch, card, modality, window, device)
    with torch.inference_mode(), autocast_for(device, precision):
        logits = model(x).float()
        if scores is not None:
            scores[done:done + len(batch)] = _foreground_entropy(logits).cpu().numpy()
        # Channels-last: the class argmax then reduces over contiguous memory (~5x faster).
        full = F.interpolate(logits.contiguous(memory_format=torch.channels_last),
                             size=vol.shape[1:], mode="bilinear", align_corners=False)
        labels[batch] = full.argmax(1).to(torch.uint8).cpu().numpy()
        if probs_out is not None:
            probs_out[done:done + len(batch)] = full.softmax(1).cpu().numpy().astype(np.float16)


def _foreground_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B,) mean entropy at the model's resolution inside the predicted foreground (the
    whole slice when nothing is predicted)."""
    p = logits.softmax(1)
    entropy = -(p * p.clamp_min(1e-8).log()).sum(1)
    fg = p.argmax(1) > 0
    return torch.where(fg.any(dim=(1, 2)),
                       (entropy * fg).sum((1, 2)) / fg.sum((1, 2)).clamp_min(1),
                       entropy.mean((1, 2)))


def classify_steps(model, card: ModelCard, image: np.ndarray, *,
                   slices: Sequence[int] | None = None, modality: str | None = None,
                   window: tuple[float, float] | None = None,
                   batch_size: int = 16, device: str | torch.device = "cpu", precision: str = "auto"
                   ) -> Generator[Progress, None, ClassificationResult]:
    """Class probabilities per slice of ``image``; yields :class:`Progress` per batch."""
    if card.task != "classification":
        raise ValueError(f"model {card.name!r} is a {card.task} model, not a classifier")
    vol, _, idx, device, model = _prepare(model, image, slices, device)
    out = np.zeros((len(idx), card.num_classes), np.float32)

    def step(batch, done):
        x = _input_batch(vol, batch, card, modality, window, device)
        with torch.inference_mode(), autocast_for(device, precision):
            out[done:done + len(batch)] = model(x).float().softmax(1).cpu().numpy()

    ood = yield from _run_batches(model, card, idx, batch_size, step)
    return ClassificationResult(out, idx, ood)


run = drain  # drive a ``*_steps`` generator to completion and return its result
