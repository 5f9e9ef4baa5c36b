"""Interleaved timing alternates the contenders' order every round (ABBA)."""
from __future__ import annotations

import torch

from benchmarks.common import interleaved


def test_interleaved_flips_the_order_every_round():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = interleaved(fns, torch.device("cpu"), rounds=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
