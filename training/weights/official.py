"""Load checkpoints written by the official VIS-MAE code (github lzl199704/VIS-MAE).

Official files are ``torch.save`` pickles: ``{'model': state_dict, 'optimizer': ...,
'epoch': ..., 'scaler': ..., 'args': argparse.Namespace}`` or a bare state dict.
They are read with ``torch.load(weights_only=True)`` and only
``argparse.Namespace`` allow-listed, so a checkpoint can never execute code.
The architecture (widths, depths, heads, window, classes, task) is inferred
from the tensors alone.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

from training.data.preprocessing import OFFICIAL_FINETUNE, OFFICIAL_PRETRAIN
from training.models import build_model, task_of
from training.models.blocks import relative_position_index
from training.models.config import SwinConfig
from training.weights.card import ModelCard
from training.weights.transfer import (
    CheckpointError,
    TransferReport,
    load_state_dict_checked,
    transfer_state_dict,
)

# Official tensors our models recompute or never use.
UNUSED_KEYS = ("pos_embed",)  # fixed sin-cos table, never added in the official forward
BUFFER_SUFFIX = "relative_position_index"  # recomputed; checked against ours


def read_state_dict(source) -> tuple[dict[str, torch.Tensor], str]:
    """A path or an in-memory checkpoint -> (flat state dict of tensors, source name)."""
    name = "<state dict>"
    if isinstance(source, (str, Path)):
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(path, "file not found")
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not zipfile.is_zipfile(path):
                raise CheckpointError(path, "not a readable PyTorch checkpoint (not a torch.save "
                                            "archive; truncated or another format)") from None
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            what = found.group(1) if found else "an object that is not plain data"
            raise CheckpointError(path, f"refused to unpickle: the file holds {what}, which a "
                                        "weights file never needs (it could run code)") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(path, f"not a readable PyTorch checkpoint ({e})") from None
    else:
        obj = source
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(name, "no state dict found (expected {'model': state_dict} or a "
                                    "bare state dict)")
    state = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            state[re.sub(r"^(module\.)+", "", k)] = v
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(name, "not a VIS-MAE checkpoint: no 'patch_embed.proj.weight' "
                                    f"(first keys: {list(obj)[:5]})")
    return state, name


def _count(state: dict, pattern: str) -> list[int]:
    """Number of blocks per stage for keys like 'layers.{i}.blocks.{j}.'."""
    counts: dict[int, int] = {}
    for k in state:
        m = re.match(pattern, k)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            counts[i] = max(counts.get(i, 0), j + 1)
    return [counts[i] for i in sorted(counts)]


def infer_architecture(state: dict, source: str = "<state dict>"
                       ) -> tuple[str, SwinConfig, int | None]:
    """-> (task, config, num_classes) from tensor names and shapes alone."""
    try:
        proj = state["patch_embed.proj.weight"]
        embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
        depths = _count(state, r"layers\.(\d+)\.blocks\.(\d+)\.")
        heads = [state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]
                 for i in range(len(depths))]
        table = state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        window = (round(table**0.5) + 1) // 2
        mlp_ratio = state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
        qkv_bias = "layers.0.blocks.0.attn.qkv.bias" in state
    except (KeyError, IndexError) as e:
        raise CheckpointError(source, f"cannot infer the Swin architecture: missing {e}") from None
    dec_depths = _count(state, r"layers_up\.(\d+)\.blocks\.(\d+)\.") or None
    if "decoder_pred.weight" in state:
        task, num_classes = "mae", None
    elif "skip_connection_layers.0.weight" in state:
        task, num_classes = "segmentation", state["head.weight"].shape[0]
    elif "head.weight" in state and state["head.weight"].ndim == 2:
        task, num_classes = "classification", state["head.weight"].shape[0]
    else:
        raise CheckpointError(source, "cannot tell the task: no decoder_pred (MAE), "
                                      "skip_connection_layers (segmentation) or 2-D head "
                                      "(classifier)")
    img_size = 224
    if "pos_embed" in state:  # the MAE records its token count
        img_size = round(state["pos_embed"].shape[1] ** 0.5) * patch
    try:
        cfg = SwinConfig(img_size=img_size, patch_size=patch, in_chans=in_chans,
                         embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads),
                         decoder_depths=tuple(dec_depths) if dec_depths else None,
                         window_size=window, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
    except ValueError as e:
        raise CheckpointError(source, f"inconsistent architecture ({e})") from None
    return task, cfg, num_classes


def _check_and_drop_unused(state: dict, source: str) -> tuple[dict, list[str]]:
    """Remove tensors our models do not keep, after checking the recomputed buffers agree."""
    kept, dropped = {}, []
    for k, v in state.items():
        if k.endswith(BUFFER_SUFFIX):
            ws = round(v.shape[0] ** 0.5)
            if not torch.equal(v.long(), relative_position_index(ws)):
                raise CheckpointError(source, f"{k} differs from the standard Swin index")
            dropped.append(k)
        elif k in UNUSED_KEYS:
            dropped.append(k)
        else:
            kept[k] = v
    return kept, dropped


def load_official_checkpoint(source, task: str | None = None, num_classes: int | None = None,
                             strict: bool = True):
    """Build the model a VIS-MAE checkpoint describes and load it -> ``(model, report)``.

    ``source``: a path to a ``.pth`` or an in-memory dict (``{'model': ...}`` or
    bare). With ``task`` other than the file's (e.g. an MAE file with
    ``task='segmentation'``), a new model of that task is initialised from the
    file's weights by name and shape; ``num_classes`` is then required.
    """
    state, name = read_state_dict(source)
    file_task, cfg, file_classes = infer_architecture(state, name)
    state, dropped = _check_and_drop_unused(state, name)
    task = task or file_task
    if task == file_task:
        if num_classes not in (None, file_classes):
            raise CheckpointError(name, f"the file has {file_classes} classes, not {num_classes}")
        model = build_model(task, cfg, num_classes=file_classes)
        if strict:
            load_state_dict_checked(model, state, name)
            report = TransferReport(source=name, loaded=sorted(state), ignored=dropped)
        else:
            report = transfer_state_dict(model, state, name)
            report.ignored += dropped
    else:
        if task != "mae" and num_classes is None:
            raise CheckpointError(name, f"initialising a {task} model from a {file_task} "
                                        "checkpoint needs num_classes")
        model = build_model(task, cfg, num_classes=num_classes)
        report = transfer_state_dict(model, state, name)
        report.ignored += dropped
    model.eval()
    return model, report


def card_for_official(model, source) -> ModelCard:
    """A model card for a model loaded from an official file (its preprocessing conventions)."""
    task = task_of(model)
    prep = OFFICIAL_PRETRAIN if task == "mae" else OFFICIAL_FINETUNE
    return ModelCard(name=Path(str(source)).stem, task=task, architecture=model.cfg.to_dict(),
                     num_classes=getattr(model, "num_classes", None),
                     preprocessing=prep.to_dict(),
                     provenance={"source": "official VIS-MAE checkpoint",
                                 "file": Path(str(source)).name},
                     description="Loaded from an official VIS-MAE checkpoint (lzl199704/VIS-MAE).")
