"""Issue 13: model cards are validated before anything is built; a bad card never hides others."""
from __future__ import annotations

import json
import random
import resource
import time

import pytest

from training.models import build_model
from training.weights.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.weights.store import ModelStore


@pytest.fixture()
def ckpt(tmp_path):
    m = build_model("segmentation", "tiny", num_classes=3)
    return save_checkpoint(m, tmp_path / "good", classes=None)


def _edit(path, fn):
    card_path = path / "model_card.json"
    card = json.loads(card_path.read_text())
    out = fn(card)
    card_path.write_text(out if isinstance(out, str) else json.dumps(out if out is not None
                                                                     else card))


def _set(*keys_value):
    *keys, value = keys_value

    def fn(card):
        d = card
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        return card
    return fn


BAD_CARDS = {
    "json list": lambda c: json.dumps([c]),
    "json null": lambda c: "null",
    "deep nesting": lambda c: "[" * 100_000 + "]" * 100_000,
    "patch_size 0": _set("architecture", "patch_size", 0),
    "patch_size text": _set("architecture", "patch_size", "4"),
    "embed_dim huge": _set("architecture", "embed_dim", 10**9),
    "depths not a list": _set("architecture", "depths", 2),
    "nameless class": lambda c: (c["classes"][1].pop("name"), c)[1],
    "class not an object": _set("classes", 1, "liver"),
    "num_classes negative": _set("num_classes", -3),
    "num_classes bool": _set("num_classes", True),
    "task unknown": _set("task", "regression"),
    "name a number": _set("name", 7),
    "architecture a list": _set("architecture", [1, 2]),
    "preprocessing std 0": _set("preprocessing", "std", 0),
    "provenance a string": _set("provenance", "x"),
    "class name with a path": _set("classes", 1, "name", "../../etc/passwd"),
    "class name with a newline": _set("classes", 1, "name", "liver\nspleen"),
}


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_bad_card_is_refused_naming_the_file(ckpt, case):
    """Before: a JSON list, null, deep nesting, patch_size 0 or a nameless class raised raw
    AttributeError / RecursionError / ZeroDivisionError / KeyError."""
    _edit(ckpt, BAD_CARDS[case])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt, verify_hash=False)
    assert "model_card.json" in str(info.value)


def test_a_card_cannot_demand_a_huge_model(ckpt):
    """Before: the architecture the card describes was built before shapes were checked, so a
    tiny card could demand ~130 GB. Now the header is compared on the meta device."""
    _edit(ckpt, _set("architecture", "embed_dim", 96 * 32))  # ~45 G parameters
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="parameters|do not fit"):
        load_checkpoint(ckpt, verify_hash=False)
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500_000  # KiB


def test_weights_shapes_are_checked_against_the_card_before_allocation(ckpt):
    _edit(ckpt, _set("architecture", "embed_dim", 16))  # file holds embed 8
    with pytest.raises(CheckpointError, match="wrong shape") as info:
        load_checkpoint(ckpt, verify_hash=False)
    assert "model.safetensors" in str(info.value)


def test_one_bad_card_never_hides_the_others(tmp_path):
    """Before: one such card in the user folder made the whole model list raise."""
    m = build_model("segmentation", "tiny", num_classes=2)
    for name in ("a", "b", "c", "d"):
        save_checkpoint(m, tmp_path / name)
    _edit(tmp_path / "b", lambda c: "null")
    _edit(tmp_path / "c", _set("architecture", "patch_size", 0))
    (tmp_path / "d" / "model_card.json").write_bytes(b"\xff\xfe garbage")
    store = ModelStore(user_dir=tmp_path)
    assert [e.path.name for e in store.list()] == ["a"]
    assert len(store.problems) == 3
    assert all("model_card.json" in p for p in store.problems)


def test_random_card_mutations_give_only_checkpoint_errors(ckpt):
    card = json.loads((ckpt / "model_card.json").read_text())
    rng = random.Random(13)
    values = [None, 0, -1, 1.5, float("nan"), "x", "", [], {}, [0] * 3, True, 10**12, [[[]]]]

    def paths(d, prefix=()):
        if isinstance(d, dict):
            for k, v in d.items():
                yield prefix + (k,)
                yield from paths(v, prefix + (k,))
        elif isinstance(d, list):
            for i, v in enumerate(d):
                yield prefix + (i,)
                yield from paths(v, prefix + (i,))
    all_paths = list(paths(card))
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(60):
        c = json.loads(json.dumps(card))
        p = rng.choice(all_paths)
        d = c
        for k in p[:-1]:
            d = d[k]
        d[p[-1]] = rng.choice(values)
        (ckpt / "model_card.json").write_text(json.dumps(c))
        try:
            load_checkpoint(ckpt, verify_hash=False)
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
