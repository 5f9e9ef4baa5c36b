"""The model card's schema: types, ranges and sizes checked before anything is built.

A card drives allocation (it says how wide and deep the network is), so
:func:`validate_card_dict` runs on the parsed JSON before a :class:`ModelCard`
exists, and :func:`check_weights_fit` compares the safetensors header with the
architecture built on the ``meta`` device before a single weight is allocated.
Every problem is a :class:`ValueError` whose message names the field.
"""
from __future__ import annotations

import math
import os

MAX_CARD_BYTES = 16 << 20  # a card is a few KiB; a 16 MiB one is not a card
MAX_NAME = 200
MAX_CLASSES = 10_000
#: Largest model a card may describe (parameters); ``$NAPARI_VISMAE_MAX_PARAMS`` overrides.
DEFAULT_MAX_PARAMS = 2_000_000_000
TASKS = ("mae", "segmentation", "classification")

# SwinConfig fields: (type, low, high); lists are checked item by item.
_INT, _FLOAT, _BOOL, _INTS = "int", "float", "bool", "ints"
ARCH_FIELDS = {
    "img_size": (_INT, 16, 8192),
    "patch_size": (_INT, 1, 64),
    "in_chans": (_INT, 1, 16),
    "embed_dim": (_INT, 1, 4096),
    "depths": (_INTS, 1, 64),
    "num_heads": (_INTS, 1, 1024),
    "decoder_depths": (_INTS, 0, 64),
    "window_size": (_INT, 1, 64),
    "mlp_ratio": (_FLOAT, 0.0625, 64.0),
    "qkv_bias": (_BOOL, None, None),
    "drop_path_rate": (_FLOAT, 0.0, 1.0),
    "norm_eps": (_FLOAT, 0.0, 1.0),
    "mask_unit": (_INT, 1, 1024),
    "mask_ratio": (_FLOAT, 0.0, 1.0),
    "norm_pix_loss": (_BOOL, None, None),
}
PREP_FIELDS = {"input_size": (_INT, 16, 8192), "mean": (_FLOAT, -1e6, 1e6),
               "std": (_FLOAT, 1e-12, 1e6)}


def max_params() -> int:
    try:
        return int(float(os.environ.get("NAPARI_VISMAE_MAX_PARAMS", DEFAULT_MAX_PARAMS)))
    except ValueError:
        return DEFAULT_MAX_PARAMS


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check(where: str, value, kind: str, lo, hi, errors: list[str]) -> None:
    if kind == _BOOL:
        if not isinstance(value, bool):
            errors.append(f"{where} must be true or false, not {value!r:.40}")
        return
    if kind == _INTS:
        if not isinstance(value, list) or not 1 <= len(value) <= 8:
            errors.append(f"{where} must be a list of 1 to 8 integers, not {value!r:.60}")
            return
        for i, v in enumerate(value):
            _check(f"{where}[{i}]", v, _INT, lo, hi, errors)
        return
    ok = _is_int(value) if kind == _INT else _is_num(value)
    if not ok:
        errors.append(f"{where} must be {'an integer' if kind == _INT else 'a number'}, "
                      f"not {value!r:.40}")
    elif not lo <= value <= hi:
        errors.append(f"{where} = {value} is outside {lo}..{hi}")


def validate_card_dict(d, source: str = "model card") -> None:
    """Raise :class:`ValueError` (message starts with ``source``) unless ``d`` is a sane card."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: a model card must be a JSON object, not "
                         f"{'null' if d is None else type(d).__name__}")
    fmt = d.get("format", "")
    if not isinstance(fmt, str) or not fmt.startswith("napari-vismae/"):
        raise ValueError(f"{source}: not a napari-vismae model card (format {fmt!r:.60})")
    missing = [k for k in ("name", "task", "architecture") if k not in d]
    if missing:
        raise ValueError(f"{source}: model card lacks {missing}")
    errors: list[str] = []
    name = d["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        errors.append(f"name must be a non-empty text of at most {MAX_NAME} characters")
    elif any(ord(ch) < 32 for ch in name):
        errors.append(f"name {name!r:.60} holds a control character")
    task = d["task"]
    if task not in TASKS:
        errors.append(f"task {task!r:.40} is not one of {list(TASKS)}")
    for key in ("description", "weights_sha256"):
        if key in d and not isinstance(d[key], str):
            errors.append(f"{key} must be text")
    for key in ("provenance", "preprocessing"):
        if key in d and not isinstance(d[key], dict):
            errors.append(f"{key} must be a JSON object")
    dom = d.get("domain", {})
    if not isinstance(dom, dict) or set(dom) - {"modalities", "body_regions"} or not all(
            isinstance(v, list) and len(v) <= 32
            and all(isinstance(x, str) and 0 < len(x) <= 64 for x in v) for v in dom.values()):
        errors.append("domain must be {\"modalities\": [...], \"body_regions\": [...]} "
                      "with short texts")
    prov = d.get("provenance")
    if isinstance(prov, dict) and "ood_reference" in prov:
        errors.extend(_ood_reference_errors(prov["ood_reference"]))
    arch = d["architecture"]
    if not isinstance(arch, dict):
        errors.append("architecture must be a JSON object")
    else:
        unknown = sorted(set(arch) - set(ARCH_FIELDS))
        if unknown:
            errors.append(f"architecture has unknown fields {unknown[:5]}")
        for key, (kind, lo, hi) in ARCH_FIELDS.items():
            if key in arch and not (key == "decoder_depths" and arch[key] is None):
                _check(f"architecture.{key}", arch[key], kind, lo, hi, errors)
    prep = d.get("preprocessing")
    if isinstance(prep, dict):
        for key, (kind, lo, hi) in PREP_FIELDS.items():
            if key in prep:
                _check(f"preprocessing.{key}", prep[key], kind, lo, hi, errors)
        for key in ("ct_window", "percentiles"):
            v = prep.get(key)
            if v is not None and not (isinstance(v, list) and len(v) == 2
                                      and all(_is_num(x) for x in v)):
                errors.append(f"preprocessing.{key} must be two numbers"
                              + (" or null" if key == "ct_window" else ""))
    n = d.get("num_classes")
    if task in ("segmentation", "classification"):
        if not _is_int(n) or not 1 <= n <= MAX_CLASSES:
            errors.append(f"num_classes must be an integer in 1..{MAX_CLASSES} for {task}, "
                          f"not {n!r:.40}")
    elif n is not None:
        errors.append("an MAE card has no num_classes (null)")
    classes = d.get("classes", [])
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
        errors.append(f"classes must be a list of at most {MAX_CLASSES} objects")
    else:
        seen = set()
        for i, c in enumerate(classes):
            if not isinstance(c, dict):
                errors.append(f"classes[{i}] must be an object with index, name and color")
                continue
            idx, cname = c.get("index"), c.get("name")
            if not _is_int(idx) or (_is_int(n) and not 0 <= idx < n) or idx < 0:
                errors.append(f"classes[{i}].index {idx!r:.20} is not a class index"
                              + (f" in 0..{n - 1}" if _is_int(n) else ""))
            elif idx in seen:
                errors.append(f"classes[{i}].index {idx} is repeated")
            seen.add(idx)
            if not isinstance(cname, str) or not cname.strip() or len(cname) > MAX_NAME:
                errors.append(f"classes[{i}] needs a non-empty name (at most {MAX_NAME} "
                              "characters)")
            elif any(ord(ch) < 32 or ch in "/\\" for ch in cname):
                errors.append(f"classes[{i}].name {cname!r:.60} holds a control character or a "
                              "path separator")
            if "color" in c and not isinstance(c["color"], (str, list)):
                errors.append(f"classes[{i}].color must be text like '#E69F00'")
        if _is_int(n) and classes and len(classes) != n:
            errors.append(f"{len(classes)} classes listed for num_classes {n}")
    if errors:
        raise ValueError(f"{source}: invalid model card: " + "; ".join(errors[:8])
                         + (f" (and {len(errors) - 8} more)" if len(errors) > 8 else ""))


def _ood_reference_errors(ref, where: str = "provenance.ood_reference") -> list[str]:
    """Problems with the out-of-distribution reference statistics
    (:mod:`training.interactive.ood`): equally long lists of finite numbers, positive std
    and a positive reference score."""
    if not isinstance(ref, dict):
        return [f"{where} must be a JSON object"]
    errors = []
    mean, std = ref.get("mean"), ref.get("std")
    if not (isinstance(mean, list) and isinstance(std, list)
            and 0 < len(mean) == len(std) <= 65536 and all(map(_is_num, (*mean, *std)))):
        errors.append(f"{where}.mean and .std must be equally long lists of finite numbers")
    elif not all(v > 0 for v in std):
        errors.append(f"{where}.std must be positive")
    p95 = ref.get("score_p95")
    if not (_is_num(p95) and p95 > 0):
        errors.append(f"{where}.score_p95 must be a positive number")
    return errors


def _meta_shapes_mode():
    """A torch function mode to build a module for its shapes only.

    Not plain ``torch.device("meta")``: initialisers (``normal_``...) and index helpers run
    on meta tensors through torch's Python references, which import ``torch._dynamo`` and
    with it triton, whose LLVM segfaults beside Mesa's GL in napari. Here constructors make
    meta tensors (no memory) except ``arange`` (CPU, for index buffers), and in-place
    operations on meta tensors are skipped (there is nothing to initialise).
    """
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    class MetaShapes(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            name = getattr(func, "__name__", "")
            if func in _device_constructors() and kwargs.get("device") is None:
                kwargs["device"] = "cpu" if name == "arange" else "meta"
            elif name.endswith("_") and not name.startswith("_"):
                first = next((a for a in (*args, *kwargs.values())
                              if isinstance(a, torch.Tensor)), None)
                if first is not None and first.is_meta:
                    return first
            return func(*args, **kwargs)

    return MetaShapes()


def expected_shapes(card) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the architecture ``card`` describes, built with meta
    tensors (no memory; see :func:`_meta_shapes_mode`); raises :class:`ValueError` if it is
    too large."""
    from training.models import build_model

    with _meta_shapes_mode():
        model = build_model(card.task, card.config, num_classes=card.num_classes)
    n = sum(p.numel() for p in model.parameters())
    if n > max_params():
        raise ValueError(f"the card describes {n:,} parameters, more than the limit "
                         f"{max_params():,} (set NAPARI_VISMAE_MAX_PARAMS to allow more)")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def weight_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, without reading any tensor."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def check_weights_fit(card, weights_path) -> None:
    """Raise :class:`ValueError` listing missing / unexpected / wrong-shape tensors."""
    want = expected_shapes(card)
    have = weight_shapes(weights_path)
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = [f"{k}: file {have[k]} vs card {want[k]}" for k in want
             if k in have and have[k] != want[k]]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            parts.append(f"{label} ({len(keys)}): {', '.join(keys[:6])}"
                         + (" ..." if len(keys) > 6 else ""))
    if parts:
        raise ValueError("weights do not fit the card's architecture: " + "; ".join(parts))
