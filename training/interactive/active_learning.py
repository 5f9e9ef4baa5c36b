"""What to correct next: rank a study's slices by the model's uncertainty.

The score is :func:`training.interactive.inference.segment_steps`' per-slice uncertainty:
the mean entropy (nats) of the softmax inside the predicted foreground (the
whole slice when nothing is predicted). Optionally the mean margin (top-1 minus
top-2 probability, inverted) is used instead. Slices the user already corrected
can be excluded.
"""
from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.interactive.inference import Progress, SegmentationResult, segment_steps


@dataclass
class Ranking:
    slices: list[int]  # most uncertain first
    scores: list[float]  # the same order
    result: SegmentationResult  # the predictions (labels of every ranked slice)

    def next_after(self, visited: Iterable[int] = (), exclude: Iterable[int] = ()) -> int | None:
        """The most uncertain slice not in ``visited`` or ``exclude``."""
        skip = set(visited) | set(exclude)
        return next((s for s in self.slices if s not in skip), None)


def rank_steps(model, card, image: np.ndarray, *, exclude: Sequence[int] = (),
               modality: str | None = None, window: tuple[float, float] | None = None,
               batch_size: int = 8, device="cpu") -> Generator[Progress, None, Ranking]:
    """Segment the slices not in ``exclude`` and rank them, most uncertain first."""
    n = 1 if np.ndim(image) == 2 else np.shape(image)[0]
    skip = {int(i) for i in exclude}
    slices = [i for i in range(n) if i not in skip]
    if not slices:
        return Ranking([], [], SegmentationResult(np.zeros(np.shape(image), np.uint8), [],
                                                  np.zeros(0, np.float32)))
    steps = segment_steps(model, card, image, slices=slices if np.ndim(image) == 3 else None,
                          modality=modality, window=window, batch_size=batch_size, device=device,
                          uncertainty=True)
    while True:
        try:
            yield next(steps)
        except StopIteration as stop:
            result: SegmentationResult = stop.value
            break
    order = np.argsort(-result.uncertainty, kind="stable")
    return Ranking([int(result.slices[k]) for k in order],
                   [float(result.uncertainty[k]) for k in order], result)


def rank_slices(model, card, image, **kw) -> Ranking:
    """:func:`rank_steps`, run to completion."""
    from training.interactive.inference import run
    return run(rank_steps(model, card, image, **kw))
