"""AdamW with the usual no-decay groups, and the per-iteration warm-up + cosine schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and norms / biases / tables / tokens without decay."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if n in skip or p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def warmup_cosine(step: float, total_steps: float, warmup_steps: float, base_lr: float,
                  min_lr: float = 0.0) -> float:
    """Linear warm-up from 0, then a half-cycle cosine down to ``min_lr``."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1e-12)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1e-12)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """``warmup_cosine`` as a per-step scheduler (its state saves and restores with the rest)."""

    def __init__(self, optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        super().__init__(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, 1.0,
                                                            min_lr_ratio))
