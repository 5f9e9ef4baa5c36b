"""napari-vismae checkpoints: a directory holding ``model.safetensors`` and ``model_card.json``.

Weights are safetensors (no code runs on load); the JSON card describes the
architecture, task, classes, preprocessing and provenance. Writes are atomic:
the directory appears complete or not at all.

Also here: loading *any* supported checkpoint (ours or an official VIS-MAE
``.pth``) and initialising a segmentation or classification model from an MAE
(:mod:`training.weights.transfer` does the copying and the report).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from training.models import build_model, task_of
from training.runtime.atomic import atomic_directory
from training.weights.card import ModelCard
from training.weights.card_schema import MAX_CARD_BYTES, check_weights_fit
from training.weights.official import card_for_official, load_official_checkpoint, read_state_dict
from training.weights.transfer import (
    CheckpointError,
    TransferReport,
    load_state_dict_checked,
    transfer_state_dict,
)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model_card.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- our format -------------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | os.PathLike, card: ModelCard | None = None,
                    *, name: str | None = None, overwrite: bool = False,
                    dtype: torch.dtype | None = None, **card_fields) -> Path:
    """Write ``model`` as a checkpoint directory ``path``; returns the path.

    Without ``card`` one is made from the model (``name`` and ``card_fields``
    such as ``classes``, ``preprocessing`` or ``provenance`` fill it in).
    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights smaller;
    they are loaded back as float32.
    """
    path = Path(path)
    task = task_of(model)
    if card is None:
        card = ModelCard(name=name or path.name, task=task, architecture=model.cfg.to_dict(),
                         num_classes=getattr(model, "num_classes", None), **card_fields)
    if card.task != task:
        raise ValueError(f"model card says task {card.task!r} but the model is {task!r}")
    state = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype)
             .contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt", "task": task})
        card.weights_sha256 = sha256_file(tmp / WEIGHTS_NAME)
        (tmp / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    return path


def _checkpoint_dir(path: Path) -> Path:
    return path.parent if path.name in (WEIGHTS_NAME, CARD_NAME) else path


def read_model_card(path: str | os.PathLike) -> ModelCard:
    """The card of a checkpoint directory (or of the weights file inside it)."""
    d = _checkpoint_dir(Path(path))
    card_path = d / CARD_NAME
    if not card_path.is_file():
        raise CheckpointError(d, f"no {CARD_NAME} (not a napari-vismae checkpoint directory)")
    try:
        size = card_path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise CheckpointError(card_path, f"model card is {size:,} bytes; a card is a few KiB "
                                             f"(limit {MAX_CARD_BYTES:,})")
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(card_path, f"model card is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(card_path, "model card is nested too deeply to be a card") from None
    except OSError as e:
        raise CheckpointError(card_path, f"cannot read model card ({e.strerror or e})") from None
    try:
        return ModelCard.from_dict(data, source=str(card_path))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        msg = str(e)
        prefix = f"{card_path}: "
        raise CheckpointError(card_path, msg[len(prefix):] if msg.startswith(prefix)
                              else f"invalid model card ({type(e).__name__}: {msg})") from None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    verify_hash: bool = True) -> tuple[nn.Module, ModelCard]:
    """Load a napari-vismae checkpoint directory -> ``(model in eval mode, card)``."""
    d = _checkpoint_dir(Path(path))
    card = read_model_card(d)
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(d, f"missing {WEIGHTS_NAME}")
    if verify_hash and card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
        raise CheckpointError(weights, "weights do not match the model card's sha256 "
                                       "(file corrupt or replaced)")
    try:  # the card's architecture vs the file's header, before allocating anything
        check_weights_fit(card, weights)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(weights, f"cannot read safetensors file ({e})") from None
    except (ValueError, TypeError) as e:
        if "weights do not fit" in str(e):
            raise CheckpointError(weights, str(e)) from None
        raise CheckpointError(d / CARD_NAME, f"invalid architecture in model card ({e})") from None
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(weights, f"cannot read safetensors file ({e})") from None
    try:
        model = build_model(card.task, card.config, num_classes=card.num_classes)
    except (ValueError, TypeError) as e:
        raise CheckpointError(d / CARD_NAME, f"invalid architecture in model card ({e})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_state_dict_checked(model, state, weights)
    return model.to(device).eval(), card


# -- transfer -----------------------------------------------------------------------------------
def init_from_checkpoint(model: nn.Module, source, encoder_only: bool = False) -> TransferReport:
    """Initialise ``model`` from an MAE (or any VIS-MAE) checkpoint: ours or official.

    ``source``: a checkpoint directory, an official ``.pth`` path, or a state dict.
    By default both encoder and decoder transfer (the official recipe);
    ``encoder_only`` keeps the decoder random.
    """
    if isinstance(source, dict):
        state, name = read_state_dict(source)
    elif (_checkpoint_dir(Path(source)) / CARD_NAME).is_file():
        src_model, _ = load_checkpoint(source)
        state, name = src_model.state_dict(), str(source)
    else:
        state, name = read_state_dict(source)
    skip = ("first_patch_expanding", "layers_up", "norm_up") if encoder_only else ()
    report = transfer_state_dict(model, state, name, skip)
    if not report.loaded:
        raise CheckpointError(name, "no tensor matches the model (wrong architecture or file?)")
    return report


def load_any(path: str | os.PathLike, device="cpu", task: str | None = None,
             num_classes: int | None = None):
    """Load ours (directory) or an official ``.pth`` -> ``(model, card, report or None)``."""
    path = Path(path)
    if (_checkpoint_dir(path) / CARD_NAME).is_file():
        model, card = load_checkpoint(path, device)
        return model, card, None
    model, report = load_official_checkpoint(path, task=task, num_classes=num_classes)
    return model.to(device).eval(), card_for_official(model, path), report
