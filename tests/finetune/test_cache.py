"""Fine-tuning prepares each slice once: CachedDataset returns what the dataset returns,
skips the preparation after the first use, respects its byte budget, and a fine-tune with
the cache trains exactly like one without."""
from __future__ import annotations

import numpy as np
import torch

from training.data.datasets import ArrayDataset
from training.data.preprocessing import Preprocessing
from training.data.slice_datasets import CacheBudget, CachedDataset
from training.finetune.engine import FinetuneConfig, finetune_steps
from training.models import build_model


class _Counting(ArrayDataset):
    loads = 0

    def load(self, i):
        type(self).loads += 1
        return super().load(i)


def _data(n=6, size=96, prep=None):
    rng = np.random.default_rng(0)
    imgs = rng.integers(-200, 300, (n, size, size)).astype(np.int16)
    masks = (rng.random((n, size, size)) > 0.7).astype(np.uint8) * rng.integers(1, 3, (n, 1, 1))
    return imgs, masks, prep or Preprocessing(input_size=64, modality="CT")


def test_cached_items_equal_uncached_and_are_prepared_once():
    imgs, masks, prep = _data()
    base = _Counting(imgs, masks, prep=prep)
    cached = CachedDataset(base, 10 * 2**20)
    _Counting.loads = 0
    for _ in range(3):
        for i in range(len(base)):
            x, y = cached[i]
            bx, by = base[i]
            assert torch.equal(x, bx) and torch.equal(y, by) and y.dtype == torch.int64
            assert cached.item_name(i) == base.load(i).name
    # base[i] and base.load(i) in the check load 3 * 2 * 6 times; the cache only 6
    assert _Counting.loads == 3 * 2 * len(base) + len(base)
    assert cached.cached_bytes == len(base) * (64 * 64 * 4 + 64 * 64)  # float32 + uint8


def test_budget_bounds_the_cache_and_the_rest_is_prepared_per_call():
    imgs, masks, prep = _data()
    per_item = 64 * 64 * 5
    budget = CacheBudget(2 * per_item + 10)
    cached = CachedDataset(ArrayDataset(imgs, masks, prep=prep), budget)
    for i in range(len(cached)):
        cached[i]
    assert cached.cached_bytes == 2 * per_item and budget.used == 2 * per_item
    x, y = cached[5]  # not cached: still correct
    assert torch.equal(y, ArrayDataset(imgs, masks, prep=prep)[5][1])


def test_finetune_with_cache_trains_exactly_like_without():
    imgs, masks, prep = _data(n=8)
    losses = {}
    for mb in (0, 64):
        torch.manual_seed(0)
        model = build_model("segmentation", "tiny", num_classes=3)
        cfg = FinetuneConfig(num_classes=3, epochs=2, batch_size=4, warmup_epochs=0.0,
                             cache_mb=mb)
        ev = list(finetune_steps(model, ArrayDataset(imgs[:6], masks[:6], prep=prep),
                                 ArrayDataset(imgs[6:], masks[6:], prep=prep), cfg))
        losses[mb] = [e.get("loss", e.get("val_loss")) for e in ev if e["kind"] != "done"]
    assert losses[0] == losses[64] and len(losses[0]) == 2 * 2 + 2
