"""The VIS-MAE model family: one Swin backbone for pretraining, segmentation and classification.

>>> from training.models import build_model
>>> mae = build_model("mae", "tiny")
>>> seg = build_model("segmentation", "vismae", num_classes=3)
"""
from __future__ import annotations

from torch import nn

from training.models.classification import SwinClassifier
from training.models.config import PRESETS, SwinConfig, get_config
from training.models.mae import SwinMAE
from training.models.segmentation import SwinUNet

TASKS = ("mae", "segmentation", "classification")


def build_model(task: str, preset: str | SwinConfig = "vismae", num_classes: int | None = None,
                **overrides) -> nn.Module:
    """Build a model for ``task`` from a preset name or a :class:`SwinConfig`."""
    cfg = get_config(preset, **overrides)
    if task == "mae":
        if num_classes is not None:
            raise ValueError("the MAE has no classes; leave num_classes unset")
        return SwinMAE(cfg)
    if num_classes is None:
        raise ValueError(f"task {task!r} needs num_classes")
    if task == "segmentation":
        return SwinUNet(cfg, num_classes)
    if task == "classification":
        return SwinClassifier(cfg, num_classes)
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def task_of(model: nn.Module) -> str:
    if isinstance(model, SwinMAE):
        return "mae"
    if isinstance(model, SwinUNet):
        return "segmentation"
    if isinstance(model, SwinClassifier):
        return "classification"
    raise TypeError(f"not a VIS-MAE model: {type(model).__name__}")


__all__ = ["PRESETS", "SwinConfig", "get_config", "SwinMAE", "SwinUNet", "SwinClassifier",
           "TASKS", "build_model", "task_of"]
