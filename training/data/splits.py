"""Data splits: k-fold cross-validation and nested label-fraction subsets, all seeded.

Splits work on *groups* (patients/volumes) when given, so slices of one
volume never land on both sides of a split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KFOLD_THRESHOLD = 4000  # the paper: 5-fold cross-validation for datasets below 4,000 images


def default_num_folds(n_images: int) -> int:
    """5 folds below 4,000 images (the paper's protocol), else 1 (a fixed split)."""
    return 5 if n_images < KFOLD_THRESHOLD else 1


def _group_ids(n: int, groups: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """-> (unique group keys in first-seen order, per-item group index)."""
    if groups is None:
        return np.arange(n), np.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} items")
    keys, first, inv = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True,
                                 return_inverse=True)
    order = np.argsort(first)  # first-seen order, independent of the key names' sorting
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return keys[order], rank[inv]


def kfold_splits(n: int, k: int = 5, seed: int = 0, groups: Sequence | None = None,
                 labels: Sequence[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs; the test parts are disjoint and cover ``range(n)``.

    Groups (patients) are shuffled with ``seed`` and dealt to folds so the
    folds' item counts stay balanced. With ``labels`` (classification) and no
    groups, folds are stratified by class.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    keys, gid = _group_ids(n, groups)
    if len(keys) < k:
        raise ValueError(f"cannot make {k} folds from {len(keys)} "
                         f"{'groups' if groups is not None else 'items'}")
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(keys), np.int64)
    if labels is not None and groups is None:
        y = np.asarray(labels)
        for c in np.unique(y):  # deal each class round-robin from a shuffled order
            idx = rng.permutation(np.flatnonzero(y == c))
            offset = rng.integers(k)
            fold_of_group[idx] = (np.arange(len(idx)) + offset) % k
    else:
        sizes = np.bincount(gid, minlength=len(keys))
        load = np.zeros(k, np.int64)
        for g in rng.permutation(len(keys)):  # greedy: next group to the lightest fold
            f = int(np.argmin(load))
            fold_of_group[g] = f
            load[f] += sizes[g]
    fold = fold_of_group[gid]
    all_idx = np.arange(n)
    return [(all_idx[fold != f], all_idx[fold == f]) for f in range(k)]


def holdout_split(n: int, fraction: float, seed: int = 0, groups: Sequence | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) indices with about ``fraction`` of the groups held out (at least one)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    keys, gid = _group_ids(n, groups)
    if len(keys) < 2:
        raise ValueError("need at least two images/volumes to hold some out")
    perm = np.random.default_rng(seed).permutation(len(keys))
    n_out = min(max(1, round(fraction * len(keys))), len(keys) - 1)
    out = np.isin(gid, perm[:n_out])
    idx = np.arange(n)
    return idx[~out], idx[out]


def label_fraction_subsets(indices: Sequence[int] | int, fractions: Sequence[float],
                           seed: int = 0, groups: Sequence | None = None
                           ) -> dict[float, np.ndarray]:
    """Nested subsets of ``indices`` for each fraction (0 < f <= 1), seeded.

    One permutation of the (groups of) items is drawn; the subset for ``f``
    is its first ``ceil(f · n)`` entries (at least one), so a smaller fraction
    is always contained in a larger one. Returned indices are sorted.
    """
    idx = np.arange(indices) if isinstance(indices, int) else np.asarray(indices, dtype=np.int64)
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"label fractions must be in (0, 1], got {f}")
    keys, gid = _group_ids(len(idx), groups)
    perm = np.random.default_rng(seed).permutation(len(keys))
    rank = np.empty(len(keys), np.int64)
    rank[perm] = np.arange(len(keys))
    out = {}
    for f in fractions:
        m = max(1, math.ceil(f * len(keys) - 1e-9))
        out[f] = np.sort(idx[rank[gid] < m])
    return out
