"""U-shaped Swin segmentation network (encoder + mirrored decoder + skip connections)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.backbone import SwinBackbone, build_decoder_stages, init_weights
from training.models.blocks import PatchExpanding
from training.models.config import SwinConfig


class _ExpandSumSquares(torch.autograd.Function):
    """Σ_j y_kj² of y = x Eᵀ viewed (N, ss, Eo), computed a few hundred rows at a time.

    Forward writes y once (saved for backward) and reduces each chunk while it is in
    cache; backward forms 2 g y one chunk at a time into a reused buffer and turns it
    into both gradients with two small matmuls per chunk. The plain autograd graph
    instead writes y, reads it for the norm, writes the p²-times-larger 2 g y to fresh
    memory and reads that twice. Same FLOPs, fewer passes over big tensors.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, E: torch.Tensor, ss: int, rows: int = 512):
        n = x.shape[0]
        y = x.new_empty(n, E.shape[0])
        out = x.new_empty(n, ss)
        Et = E.t()
        for s in range(0, n, rows):
            e = min(n, s + rows)
            torch.mm(x[s:e], Et, out=y[s:e])
            torch.linalg.vector_norm(y[s:e].view(e - s, ss, -1), dim=-1, out=out[s:e])
        ctx.save_for_backward(x, E, y)
        ctx.ss, ctx.rows = ss, rows
        return out.square_()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, E, y = ctx.saved_tensors
        ss, rows = ctx.ss, ctx.rows
        n = x.shape[0]
        want_x, want_E = ctx.needs_input_grad[:2]
        gx = x.new_empty(x.shape) if want_x else None
        gE = torch.zeros_like(E) if want_E else None
        buf = y.new_empty(min(rows, n), y.shape[1])
        for s in range(0, n, rows):
            e = min(n, s + rows)
            gy = buf[:e - s]
            torch.mul(y[s:e].view(e - s, ss, -1), (2 * g[s:e]).unsqueeze(-1),
                      out=gy.view(e - s, ss, -1))
            if want_x:
                torch.mm(gy, E, out=gx[s:e])
            if want_E:  # (mm then add_: FLOP counters miss an in-place addmm_)
                gE.add_(torch.mm(gy.t(), x[s:e]))
        return gx, gE, None, None


def _sum_squares_chunked(x: torch.Tensor, E: torch.Tensor, ss: int,
                         rows: int = 512) -> torch.Tensor:
    """(N, ss): Σ_j y_kj² of y = x Eᵀ viewed (N, ss, Eo), a few hundred rows at a time.

    The full y (p² times the decoder tokens: 38 MB for two 224² images) would be written
    to fresh, page-faulted memory and read back; a chunk stays in cache and its buffer is
    reused (measured ~1.8x faster for this step on CPU). Inference only (no autograd).
    """
    n = x.shape[0]
    out = x.new_empty(n, ss)
    buf = x.new_empty(min(rows, n), E.shape[0])
    Et = E.t()
    for s in range(0, n, rows):
        e = min(n, s + rows)
        y = torch.mm(x[s:e], Et, out=buf[:e - s])
        torch.linalg.vector_norm(y.view(e - s, ss, -1), dim=-1, out=out[s:e])
    return out.square_()


class SwinUNet(SwinBackbone):
    """Per-pixel logits (B, num_classes, H, W).

    Decoder step i concatenates its tokens with the input of encoder stage
    L-2-i (current tokens first) and fuses them with a 1×1 convolution
    (``skip_connection_layers.i``) before ``layers_up.i``. A final p× patch
    expanding returns to pixel resolution and a bias-free 1×1 conv gives the
    logits. The MAE's encoder *and* decoder weights transfer by name.
    """

    def __init__(self, cfg: SwinConfig, num_classes: int):
        super().__init__(cfg)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        self.num_classes = num_classes
        self.first_patch_expanding, self.layers_up = build_decoder_stages(cfg)
        L = cfg.num_stages
        self.skip_connection_layers = nn.ModuleList(
            nn.Conv2d(2 * cfg.dims[L - 2 - i], cfg.dims[L - 2 - i], kernel_size=1)
            for i in range(L - 1))
        self.norm_up = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.final_patch_expanding = PatchExpanding(cfg.embed_dim, cfg.embed_dim, cfg.patch_size,
                                                    cfg.norm_eps)
        self.head = nn.Conv2d(cfg.embed_dim, num_classes, kernel_size=1, bias=False)
        init_weights(self)

    @staticmethod
    def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A 1×1 conv applied to channels-last tokens (no layout round trip)."""
        return F.linear(x, conv.weight.flatten(1), conv.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised decoder tokens at patch resolution (B, H/p, W/p, E)."""
        latent, skips = self.forward_encoder(self.patch_embed(x))
        x = self.first_patch_expanding(latent)
        L = self.cfg.num_stages
        stages = zip(self.skip_connection_layers, self.layers_up, strict=True)
        for i, (fuse, layer) in enumerate(stages):
            x = self._pointwise(fuse, torch.cat([x, skips[L - 2 - i]], dim=-1))
            x = layer(x)
        return self.norm_up(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Final p× patch expanding + per-pixel LayerNorm + 1×1 head -> (B, classes, H, W).

        Same result as expanding to pixels first, but only the small logit tensor is
        rearranged; in fp32/fp64 the LayerNorm and the head are folded (``_folded_head``)
        so that the p²-times-larger expanded tensor is read once and never normalised.
        """
        fpe = self.final_patch_expanding
        B, h, w, _ = x.shape
        s = fpe.scale
        if x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(
                x.device.type):
            y = self._folded_head(x)  # (B, h, w, s*s, classes)
        else:  # low precision: the plain order (LayerNorm statistics in fp32 under autocast)
            y = fpe.norm(fpe.expand(x).view(B, h, w, s * s, -1))
            y = F.linear(y, self.head.weight.flatten(1))
        return y.view(B, h, w, s, s, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, h * s, w * s)

    def _folded_head(self, x: torch.Tensor) -> torch.Tensor:
        """head(LayerNorm(expand(x))) per sub-pixel k, without the normalised tensor:

        with y_k = E_k x, LN(y)_j = g_j (y_j - μ)/σ + b_j and head W,
        W·LN(y_k) = ((W∘g) E_k x - μ_k Σ_j (W∘g)_j) / σ_k + W b.
        (W∘g) E_k is a (classes × C) matrix per sub-pixel, so the numerator is a small
        matmul from x, so is μ_k; σ_k² = |y_k|²/n - μ_k², one read of y_k and no write.
        ~1e-6 from the plain order in fp32, exact up to rounding in fp64.
        """
        fpe = self.final_patch_expanding
        B, h, w, C = x.shape
        ss = fpe.scale * fpe.scale
        E = fpe.expand.weight  # (ss * Eo, C), sub-pixel major
        W = self.head.weight.flatten(1)  # (K, Eo)
        Wg = W * fpe.norm.weight  # (K, Eo)
        K, Eo = Wg.shape
        A = (Wg @ E.view(ss, Eo, C)).reshape(ss * K, C)  # (ss*K, C)
        # statistics by reductions that never write a tensor the size of y (var_mean,
        # y.square() and LayerNorm itself each cost ~10x a plain sum over y on CPU)
        mean = F.linear(x, E.view(ss, Eo, C).mean(1)).unsqueeze(-1)  # (B, h, w, ss, 1)
        # chunks of 512 rows on CPU (cache-sized); one chunk on accelerators, where big
        # matmuls are cheap and every chunk would cost kernel launches
        rows = 512 if x.device.type == "cpu" else max(1, B * h * w)
        if torch.is_grad_enabled():
            mean_sq = _ExpandSumSquares.apply(x.reshape(-1, C), E, ss, rows).view(B, h, w, ss)
        else:
            mean_sq = _sum_squares_chunked(x.reshape(-1, C), E, ss, rows).view(B, h, w, ss)
        mean_sq = mean_sq.unsqueeze(-1) / Eo
        var = (mean_sq - mean.square()).clamp_min(0)
        num = F.linear(x, A).view(B, h, w, ss, K)
        return (num - mean * Wg.sum(1)) * torch.rsqrt(var + fpe.norm.eps) + W @ fpe.norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))
