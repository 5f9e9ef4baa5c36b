"""Swin classifier: the VIS-MAE encoder, a final LayerNorm, average pooling and a linear head."""
from __future__ import annotations

import torch
from torch import nn

from training.models.backbone import SwinBackbone, init_weights
from training.models.config import SwinConfig


class SwinClassifier(SwinBackbone):
    """Image-level logits (B, num_classes)."""

    def __init__(self, cfg: SwinConfig, num_classes: int):
        super().__init__(cfg)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.norm = nn.LayerNorm(cfg.dims[-1], eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dims[-1], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> pooled features (B, C_last)."""
        latent, _ = self.forward_encoder(self.patch_embed(x))
        return self.norm(latent).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.forward_features(x))
