"""Swin Transformer building blocks. Token tensors are channels-last: (B, H, W, C).

Module and parameter names follow the official VIS-MAE checkpoints
(``blocks.N.attn.qkv``, ``downsample.reduction``, ``upsample.expand`` ...), so
official state dicts load by name.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

# Added to attention logits across shifted-window seams. The official code adds -100;
# exp(-100) ~ 4e-44 is a denormal float that slows CPU matmuls up to 10x, and it is
# below fp32 (and far below our fp64 parity tolerance) next to the unmasked terms, so
# -inf gives the same attention without denormals. No row is ever fully masked.
SHIFT_MASK_VALUE = float("-inf")


# Kept torch-only on purpose: importing timm pulls in torchvision and, through it, triton,
# whose bundled LLVM crashes (segfault) inside a napari process that already loaded Mesa's
# software OpenGL. The two layers below are the standard ones (timm's naming).
def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole samples' residual branches with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep.div_(1 - p)  # scale the per-sample mask, not x: one pass over x (as timm)


def _no_autograd() -> bool:
    """True when no graph is recorded (``torch.no_grad`` / ``inference_mode``): a fresh
    intermediate may then be overwritten in place instead of allocating (and
    page-faulting) another tensor of the same size. The in-place fast paths below compute
    exactly what the out-of-place code computes."""
    return not torch.is_grad_enabled()


def _keeps_dtype(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a.add_(b)`` gives the dtype of ``a + b``."""
    return torch.promote_types(a.dtype, b.dtype) == a.dtype


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (``fc1``/``fc2``, the official parameter names)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if _no_autograd() and type(self.act) is nn.GELU and self.act.approximate == "none":
            return self.fc2(torch.ops.aten.gelu_(h))  # the 4C-wide activation: no second copy
        return self.fc2(self.act(h))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, ws * ws, C); H and W must be multiples of ws."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).transpose(2, 3)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """(B * num_windows, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).transpose(2, 3)
    return x.reshape(-1, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) index into a (2ws-1)² table of relative position biases."""
    grid = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack(grid).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(H: int, W: int, ws: int, shift: int, device=None) -> torch.Tensor:
    """(num_windows, ws², ws²) additive mask that stops attention across the roll seams."""
    regions = torch.zeros(H, W, device=device)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, hs in enumerate(cuts):
        for j, wsl in enumerate(cuts):
            regions[hs, wsl] = i * 3 + j
    r = window_partition(regions[None, :, :, None], ws).squeeze(-1)  # (nW, N)
    same = r[:, None, :] == r[:, :, None]
    return torch.zeros_like(same, dtype=torch.float32).masked_fill(~same, SHIFT_MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Recomputed, not stored: official checkpoints carry it and the loader checks it matches.
        self.register_buffer("relative_position_index", relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C); mask: (nW, N, N) additive or None."""
        Bw, N, C = x.shape
        qkv = self.qkv(x).view(Bw, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (Bw, heads, N, hd)
        bias = self.position_bias()
        if mask is not None:
            bias = bias[None] + mask[:, None].to(bias.dtype)  # (nW, heads, N, N)
        bias = bias.to(q.dtype)
        if q.device.type == "cpu":
            out = self._attend_explicit(q, k, v, bias)
        else:  # fused kernels (flash / memory-efficient) on accelerators
            if mask is not None:
                q, k, v = (t.view(-1, *bias.shape[:2], *t.shape[2:]) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.reshape(Bw, self.num_heads, N, -1).transpose(1, 2).reshape(Bw, N, C))

    @staticmethod
    def _attend_explicit(q, k, v, bias):
        """softmax(q kᵀ / √d + bias) v. On CPU this beats SDPA's masked path by ~1.8×,
        which spends its time validating the mask."""
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (Bw, heads, N, N)
        # in place: the matmul's backward needs q and k, never its output
        attn.view(-1, *bias.shape).add_(bias)
        if _no_autograd() and not torch.is_autocast_enabled(attn.device.type):
            return torch.softmax(attn, -1, out=attn) @ v
        return attn.softmax(-1) @ v


class SwinBlock(nn.Module):
    """One Swin block: (shifted) window attention then an MLP, both pre-norm and residual."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: dict = {}

    def _shift_mask(self, H: int, W: int, device) -> torch.Tensor:
        key = (H, W, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = shifted_window_mask(H, W, self.window_size, self.shift_size,
                                                        device)
        return self._mask_cache[key]

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws, shift = self.window_size, self.shift_size
        pad_h, pad_w = (-H) % ws, (-W) % ws
        if pad_h or pad_w:  # sides not a multiple of the window: pad, attend, crop
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = self._shift_mask(Hp, Wp, x.device)
        x = window_reverse(self.attn(window_partition(x, ws), mask), ws, Hp, Wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :H, :W, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _no_autograd() and not self.training:  # inference: residuals added in place
            a = self._attention(self.norm1(x))  # a fresh tensor (roll / window reverse)
            # in place only where the sum keeps the dtype x + a would have (under autocast a
            # is bf16 and the residual stream fp32) and a is contiguous (not cropped padding)
            x = a.add_(x) if a.is_contiguous() and _keeps_dtype(a, x) else a + x
            m = self.mlp(self.norm2(x))
            return x.add_(m) if _keeps_dtype(x, m) else x + m
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches -> tokens (B, H/p, W/p, C), then LayerNorm.

    A one-channel image fed to a three-channel model is embedded with the
    channel-summed kernel: identical to repeating the image three times, at a
    third of the cost.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        if x.shape[1] != weight.shape[1]:
            if x.shape[1] != 1:
                raise ValueError(f"expected 1 or {weight.shape[1]} input channels, "
                                 f"got {x.shape[1]}")
            weight = weight.sum(1, keepdim=True)
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            x = F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))
        x = F.conv2d(x, weight, self.proj.bias, stride=p)
        return self.norm(x.permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2×2 neighbourhood -> one token: (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class PatchExpanding(nn.Module):
    """One token -> s×s tokens: (B, H, W, C_in) -> (B, sH, sW, C_out), then LayerNorm.

    The expanded channels are ordered (row, column, channel), channel fastest.
    """

    def __init__(self, dim: int, out_dim: int, scale: int = 2, norm_eps: float = 1e-6):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        s = self.scale
        x = self.expand(x).view(B, H, W, s, s, -1).transpose(2, 3).reshape(B, H * s, W * s, -1)
        return self.norm(x)


def _blocks(dim, depth, heads, cfg, drop_paths) -> nn.ModuleList:
    return nn.ModuleList(
        SwinBlock(dim, heads, cfg.window_size, 0 if i % 2 == 0 else cfg.window_size // 2,
                  cfg.mlp_ratio, cfg.qkv_bias, drop_paths[i], cfg.norm_eps)
        for i in range(depth))


class EncoderStage(nn.Module):
    """Swin blocks at one resolution, then an optional 2× patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, cfg, drop_paths: Sequence[float],
                 downsample: bool):
        super().__init__()
        self.blocks = _blocks(dim, depth, heads, cfg, drop_paths)
        self.downsample = PatchMerging(dim, cfg.norm_eps) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class DecoderStage(nn.Module):
    """Swin blocks at one resolution, then an optional 2× patch expanding."""

    def __init__(self, dim: int, depth: int, heads: int, cfg, drop_paths: Sequence[float],
                 upsample: bool):
        super().__init__()
        self.blocks = _blocks(dim, depth, heads, cfg, drop_paths)
        self.upsample = PatchExpanding(dim, dim // 2, 2, cfg.norm_eps) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.upsample(x) if self.upsample is not None else x
