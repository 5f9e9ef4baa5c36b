"""Fine-tuning losses.

Segmentation: ``0.4 · CrossEntropy + 0.6 · soft Dice``, the weights of the
official code (``run_finetune_segmentation.py``). The paper's text states the
ratio the other way round ("Dice + CE 4:6"); we follow the code, which is
what produced the released models. Both weights are parameters.

The soft Dice per class c is ``1 - (2·Σ p·t + ε) / (Σ p² + Σ t² + ε)`` pooled
over the whole batch (squared denominators, ε = 1e-5, as the official
``DiceLoss``). Background is excluded from the sum. Official code divides
the sum over foreground classes by C *including* background, which silently
scales the Dice term by (C-1)/C; by default we average over the C-1
foreground classes (``denominator='foreground'``) so the 0.4/0.6 balance holds
for any number of classes. ``denominator='all'`` reproduces the official
scaling exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5,
                   denominator: str = "foreground") -> torch.Tensor:
    """logits (B, C, H, W), target (B, H, W) int -> scalar Dice loss (fp32)."""
    C = logits.shape[1]
    if C < 2:
        raise ValueError("soft Dice needs at least 2 classes (background + 1)")
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), C).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.pow(2).sum(dims) + onehot.pow(2).sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    loss = (1 - dice)[1:].sum()
    if denominator == "foreground":
        return loss / (C - 1)
    if denominator == "all":
        return loss / C
    raise ValueError(f"denominator must be 'foreground' or 'all', got {denominator!r}")


class DiceCELoss(nn.Module):
    """``ce_weight · CE + dice_weight · soft Dice`` (defaults 0.4 / 0.6 as in the official code)."""

    def __init__(self, ce_weight: float = 0.4, dice_weight: float = 0.6,
                 denominator: str = "foreground", class_weights: torch.Tensor | None = None):
        super().__init__()
        if denominator not in ("foreground", "all"):
            raise ValueError(f"denominator must be 'foreground' or 'all', got {denominator!r}")
        self.ce_weight, self.dice_weight, self.denominator = ce_weight, dice_weight, denominator
        self.class_weights = class_weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target.long(), weight=self.class_weights)
        dice = soft_dice_loss(logits, target, denominator=self.denominator)
        return self.ce_weight * ce + self.dice_weight * dice

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            return {"ce": float(F.cross_entropy(logits.float(), target.long())),
                    "dice_loss": float(soft_dice_loss(logits, target,
                                                      denominator=self.denominator))}
