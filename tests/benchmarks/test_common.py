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


def test_paired_ratio_cancels_a_load_change_between_rounds():
    from benchmarks.common import paired_ratio

    a = [1.0, 2.0, 4.0, 1.0, 2.0]  # the machine got 2x, 4x slower in some rounds
    b = [0.5, 1.0, 2.0, 0.5, 1.0]
    assert paired_ratio(a, b) == 2.0


def test_environment_names_the_commit_and_the_load():
    import re

    import torch

    from benchmarks.common import environment
    env = environment(torch.device("cpu"))
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", env["commit"] or ""), env["commit"]
    assert env["load_1min"] >= 0
