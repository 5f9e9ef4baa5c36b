"""Swin masked autoencoder (the VIS-MAE pretraining model)."""
from __future__ import annotations

import torch
from torch import nn

from training.models.backbone import SwinBackbone, build_decoder_stages, init_weights
from training.models.config import SwinConfig
from training.models.masking import random_window_mask


class SwinMAE(SwinBackbone):
    """Patch embedding -> window masking -> Swin encoder -> bottleneck -> Swin decoder -> pixels.

    Masked tokens are replaced by a learned ``mask_token`` (not dropped), and the
    loss is the MSE on masked patches only. ``pred`` is (B, tokens, p*p*C) with
    the values of a patch ordered (row, column, channel), channel fastest.
    """

    def __init__(self, cfg: SwinConfig):
        super().__init__(cfg)
        # Fast pretraining (``--fast``): the encoder computes only visible tokens; see
        # training/models/mae_fast.py for the exact variant. Not a parameter: same weights.
        self.fast = False
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.first_patch_expanding, self.layers_up = build_decoder_stages(cfg)
        self.norm_up = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size**2 * cfg.in_chans)
        init_weights(self, linear_init="xavier")
        nn.init.normal_(self.mask_token, std=0.02)

    # -- pixels <-> patches --------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h*w, p*p*C), values ordered (p, q, c)."""
        B, C, H, W = imgs.shape
        p = self.cfg.patch_size
        x = imgs.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, h*w, p*p*C) -> (B, C, H, W); square grid unless ``grid_hw`` is given."""
        B, N, D = x.shape
        p = self.cfg.patch_size
        h, w = grid_hw or (int(N**0.5),) * 2
        C = D // (p * p)
        x = x.reshape(B, h, w, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, h * p, w * p)

    # -- forward ---------------------------------------------------------------------
    def random_mask(self, batch: int, grid_hw: tuple[int, int], device=None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        unit = self.cfg.mask_unit // self.cfg.patch_size
        return random_window_mask(batch, grid_hw, unit, self.cfg.mask_ratio, device, generator)

    def forward_decoder(self, latent: torch.Tensor) -> torch.Tensor:
        """bottleneck (B, h', w', C') -> per-token pixel prediction (B, h*w, p*p*C)."""
        x = self.first_patch_expanding(latent)
        for layer in self.layers_up:
            x = layer(x)
        return self.decoder_pred(self.norm_up(x)).flatten(1, 2)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        """Mean over masked tokens of the per-token MSE, in fp32 or wider (never in bf16)."""
        if imgs.shape[1] != self.cfg.in_chans:  # grayscale into a 3-channel model
            imgs = imgs.expand(-1, self.cfg.in_chans, -1, -1)
        dtype = torch.promote_types(pred.dtype, torch.float32)
        target = self.patchify(imgs).to(dtype)
        if self.cfg.norm_pix_loss:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = (pred.to(dtype) - target).pow(2).mean(-1)
        mask = mask.to(loss.dtype)
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """imgs (B, C, H, W) normalised; mask (B, tokens) with 1 = masked, or None for random.

        Returns ``(loss, pred, mask)``.
        """
        self.check_input(imgs)
        x = self.patch_embed(imgs)
        B, h, w, C = x.shape
        if mask is None:
            mask = self.random_mask(B, (h, w), x.device, generator)
        elif mask.shape != (B, h * w):
            raise ValueError(f"mask must be (B, tokens) = {(B, h * w)}, got {tuple(mask.shape)}")
        if self.fast:
            from training.models.mae_fast import forward_encoder_fast
            latent = forward_encoder_fast(self, x, mask)
        else:
            m = mask.view(B, h, w, 1).to(torch.bool)
            x = torch.where(m, self.mask_token.view(1, 1, 1, C).to(x.dtype), x)
            latent, _ = self.forward_encoder(x)
        pred = self.forward_decoder(latent)
        return self.forward_loss(imgs, pred, mask), pred, mask
