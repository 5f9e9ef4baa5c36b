"""The Swin encoder shared by every VIS-MAE model, and the mirrored decoder stages."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from training.models.blocks import DecoderStage, EncoderStage, PatchEmbed, PatchExpanding
from training.models.config import SwinConfig


def drop_path_rates(cfg: SwinConfig) -> list[list[float]]:
    """Stochastic-depth rate of every encoder block, rising linearly to ``drop_path_rate``."""
    total = sum(cfg.depths)
    rates = torch.linspace(0, cfg.drop_path_rate, total, device="cpu").tolist()  # meta-safe
    out, start = [], 0
    for d in cfg.depths:
        out.append(rates[start:start + d])
        start += d
    return out


class SwinBackbone(nn.Module):
    """``patch_embed`` + encoder stages ``layers.0 .. layers.{L-1}`` (the last is the bottleneck).

    Subclasses add a decoder or a head. ``forward_encoder`` returns the
    bottleneck tokens and the input of every encoder stage (the U-Net skips).
    """

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.norm_eps)
        dpr = drop_path_rates(cfg)
        last = cfg.num_stages - 1
        self.layers = nn.ModuleList(
            EncoderStage(cfg.dims[i], cfg.depths[i], cfg.num_heads[i], cfg, dpr[i],
                         downsample=i < last)
            for i in range(cfg.num_stages))

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        m = self.cfg.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of {m}; "
                             f"resize to the model input size ({self.cfg.img_size})")

    def forward_encoder(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens (B, h, w, C) after patch embedding -> (bottleneck, stage inputs)."""
        skips = []
        x = tokens
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return x, skips

    def no_weight_decay(self) -> set[str]:
        """Parameters that AdamW should not decay: norms, biases, tables, tokens."""
        return {n for n, p in self.named_parameters()
                if p.ndim <= 1 or n.endswith("relative_position_bias_table") or "token" in n}


def build_decoder_stages(cfg: SwinConfig) -> tuple[PatchExpanding, nn.ModuleList]:
    """``first_patch_expanding`` and ``layers_up``: the encoder mirrored, stage L-2 first."""
    dpr = drop_path_rates(cfg)
    L = cfg.num_stages
    first = PatchExpanding(cfg.dims[-1], cfg.dims[-1] // 2, 2, cfg.norm_eps)
    stages = nn.ModuleList()
    for i in range(L - 1):
        enc = L - 2 - i  # encoder stage mirrored by this decoder stage
        depth = cfg.decoder_depths[i]
        rates = (dpr[enc] + [dpr[enc][-1] if dpr[enc] else 0.0] * depth)[:depth]
        stages.append(DecoderStage(cfg.dims[enc], depth, cfg.decoder_heads[i], cfg, rates,
                                   upsample=i < L - 2))
    return first, stages


def init_weights(module: nn.Module, linear_init: str = "trunc_normal") -> None:
    """Linear: xavier-uniform (the official MAE) or trunc-normal 0.02 (fine-tuning heads);
    LayerNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if linear_init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
