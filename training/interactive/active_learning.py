"""What to correct next: rank a study's slices by the model's uncertainty.

The score is :func:`training.interactive.inference.segment_steps`' per-slice uncertainty:
the mean entropy (nats) of the softmax inside the predicted foreground (the
whole slice when nothing is predicted). Slices the user already corrected can be excluded.

The next slice is the most uncertain one that is not next to a slice already corrected or
visited (:func:`spread_pick`). Pure top-k ranking sends the user to adjacent slices at the
volume's ends, which all lack the same organs: in the simulated-user benchmark
(docs/simulated_user.md) fine-tuning on them never reached Dice 0.8 on phantoms, while
evenly spaced slices reached 0.9 from two.
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
        """The most uncertain slice not in ``visited`` or ``exclude`` and not crowding them
        (:func:`spread_pick`); None when every ranked slice is visited or excluded."""
        picked = spread_pick(self.slices, self.n_slices, 1, [*visited, *exclude])
        return picked[0] if picked else None

    @property
    def n_slices(self) -> int:
        """Slices of the ranked volume (a 2-D image: 1)."""
        labels = self.result.labels
        return int(labels.shape[0]) if np.ndim(labels) == 3 else 1


def spread_pick(order: Sequence[int], n: int, k: int = 1, taken: Iterable[int] = ()) -> list[int]:
    """Up to ``k`` slices from ``order`` (most uncertain first), each the most uncertain one at
    least ``gap`` slices away from every slice in ``taken`` and every earlier pick.

    ``gap`` is about half the spacing of ``m + 1`` evenly spaced slices, ``n // (2 (m + 1))``
    with ``m`` slices taken so far (no gap for the first); when no candidate keeps it, the
    gap halves until one does. Uncertainty still chooses, but never a cluster of neighbours."""
    taken = [int(t) for t in taken]
    skip = set(taken)
    picked: list[int] = []
    for _ in range(k):
        cands = [int(s) for s in order if int(s) not in skip]
        if not cands:
            break
        near = taken + picked
        gap = n // (2 * (len(near) + 1)) if near else 0
        while True:
            z = next((s for s in cands if all(abs(s - t) >= gap for t in near)), None)
            if z is not None:
                break
            gap //= 2
        picked.append(z)
        skip.add(z)
    return picked


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
