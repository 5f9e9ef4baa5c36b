"""Fast MAE pretraining: the Swin encoder computes only the tokens that see visible pixels.

The variant implemented here ("mask stream", GreenMIM-like in cost, not in attention
layout) keeps the parameters, module names and the dense decoder of ``SwinMAE``, so its
weights load unchanged into ``SwinMAE`` / ``SwinUNet``. What it computes:

* **Active tokens.** At stage 0 the visible tokens. After a patch merging a token is
  active when any of its 2×2 children was (with the default 16-px mask units the first
  two merges stay inside units, so stages 0–2 hold exactly the visible 25 %; at the 7×7
  bottleneck a token is active when any of its four units is visible). Per sample the
  active sets are padded to the batch's largest with masked tokens, which are then
  simply computed like active ones.
* **Mask stream.** Every inactive token is represented by *one* state per sample and
  layer: the mask token sent through the same blocks. That is exactly what a masked
  token computes in the official model when its whole window is masked (attention over
  identical tokens returns their value, whatever the position bias).
* **Per block.** LayerNorms, ``qkv``, ``proj``, the MLP and drop path run on the active
  tokens plus the stream (one extra token per sample): ~75 % of the encoder's
  FLOPs are skipped at the default ratio. Attention itself stays windowed on the full
  grid, with the real relative position bias and shift masks: inactive positions
  contribute the stream's key and value. Patch merging gathers the 2×2 children from
  the grid (stream where inactive) and reduces only active parents.

Difference from the official semantics (the default, dense mode): a masked token next
to visible ones is *not* updated with their context — every masked token keeps the
stream state — so visible tokens see uninformed masked neighbours. With nothing masked
or everything masked the two modes agree to rounding (``tests/models/test_mae_fast.py``).
The decoder is unchanged and dense: the bottleneck grid is the active tokens scattered
into the stream state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training.models.blocks import EncoderStage, SwinBlock, window_partition


def check_fast_compatible(cfg, grid_hw: tuple[int, int]) -> None:
    """Fast mode needs every stage's token grid to be whole windows (224 input: 56/28/14/7)."""
    h, w = grid_hw
    for i in range(cfg.num_stages):
        if h % cfg.window_size or w % cfg.window_size:
            raise ValueError(f"fast pretraining needs every stage's token grid to be a multiple "
                             f"of the window ({cfg.window_size}); stage {i} is {h}x{w} "
                             f"(use input size {cfg.img_size} or the default mode)")
        if i < cfg.num_stages - 1:
            if h % 2 or w % 2:
                raise ValueError(f"fast pretraining needs even token grids before each merge; "
                                 f"stage {i} is {h}x{w}")
            h, w = h // 2, w // 2


def _active_ids(active: torch.Tensor) -> torch.Tensor:
    """(B, N) bool -> (B, K) token indices, active ones first; K = the batch's largest count.

    One host sync per stage (the count); the tensors' shapes depend on it.
    """
    k = int(active.sum(1).max())
    if k == active.shape[1]:
        return torch.arange(k, device=active.device).expand(active.shape[0], k)
    order = torch.sort((~active).to(torch.int32), dim=1, stable=True).indices
    return order[:, :k]


def _to_grid(tokens: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K+1, D) active tokens + stream -> (B, n, D): the stream everywhere, then the
    active tokens scattered to their positions (gradients reach both)."""
    B, _, D = tokens.shape
    base = tokens[:, -1:].expand(B, n, D)
    return base.scatter(1, ids.unsqueeze(-1).expand(-1, -1, D), tokens[:, :-1])


def _gather(grid: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return grid.gather(1, ids.unsqueeze(-1).expand(-1, -1, grid.shape[-1]))


_WINDOW_ORDER: dict = {}


def _window_order(H: int, W: int, ws: int, shift: int, device) -> torch.Tensor:
    """(H*W,) position in the (rolled, window-partitioned) order of each row-major token.

    Scattering straight into that order, and gathering straight out of it, replaces the
    roll / window partition / window reverse / roll copies of the dense block.
    """
    key = (H, W, ws, shift, str(device))
    if key not in _WINDOW_ORDER:
        pos = torch.arange(H * W, device=device).view(1, H, W, 1)
        if shift:
            pos = torch.roll(pos, shifts=(-shift, -shift), dims=(1, 2))
        order = window_partition(pos, ws).reshape(-1)  # window slot -> token
        inv = torch.empty_like(order)
        inv[order] = torch.arange(H * W, device=device)
        _WINDOW_ORDER[key] = inv
    return _WINDOW_ORDER[key]


def _block(blk: SwinBlock, x: torch.Tensor, ids: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """One Swin block on x = (B, K+1, C): K active tokens, then the mask stream."""
    attn = blk.attn
    B, _, C = x.shape
    heads, ws, shift = attn.num_heads, blk.window_size, blk.shift_size
    qkv = attn.qkv(blk.norm1(x))  # (B, K+1, 3C): the only token-wise work, on K+1 tokens
    slots = _window_order(H, W, ws, shift, x.device)[ids]  # (B, K) window slots
    N = ws * ws
    win = _to_grid(qkv, slots, H * W).view(-1, N, 3 * C)  # (B*nW, N, 3C)
    Bw = win.shape[0]
    q, k, v = win.view(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    bias = attn.position_bias()
    mask = blk._shift_mask(H, W, x.device) if shift else None
    if mask is not None:
        bias = bias[None] + mask[:, None].to(bias.dtype)
    bias = bias.to(q.dtype)
    if q.device.type == "cpu":
        out = attn._attend_explicit(q, k, v, bias)
    else:
        if mask is not None:
            q, k, v = (t.view(-1, *bias.shape[:2], *t.shape[2:]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = out.reshape(Bw, heads, N, -1).transpose(1, 2).reshape(B, H * W, C)
    # Attention over identical tokens returns their value: the stream's output is its v.
    out = torch.cat([_gather(out, slots), qkv[:, -1:, 2 * C:]], 1)
    x = x + blk.drop_path(attn.proj(out))
    return x + blk.drop_path(blk.mlp(blk.norm2(x)))


def _merge(stage: EncoderStage, x: torch.Tensor, ids: torch.Tensor, active: torch.Tensor,
           H: int, W: int):
    """Patch merging of the active parents: returns (x', ids', active') at (H/2, W/2)."""
    B, _, C = x.shape
    grid = _to_grid(x, ids, H * W).view(B, H, W, C)
    cat = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2],
                     grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1).reshape(B, -1, 4 * C)
    active = active.view(B, H // 2, 2, W // 2, 2).any(4).any(2).reshape(B, -1)
    ids = _active_ids(active)
    stream = x[:, -1:].repeat(1, 1, 4)
    down = stage.downsample
    return down.reduction(down.norm(torch.cat([_gather(cat, ids), stream], 1))), ids, active


def forward_encoder_fast(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens (B, h, w, C) after patch embedding (unmasked), mask (B, h*w) 1 = masked ->
    the dense bottleneck (B, h', w', C')."""
    B, H, W, C = tokens.shape
    check_fast_compatible(model.cfg, (H, W))
    active = mask.view(B, H * W) == 0
    ids = _active_ids(active)
    stream = model.mask_token.to(tokens.dtype).expand(B, 1, C)
    # padding tokens (samples with fewer visible tokens than the batch's most) are masked:
    # they start as the mask token, like every masked token of the official model
    tokens = torch.where(active.unsqueeze(-1), tokens.reshape(B, H * W, C), stream)
    x = torch.cat([_gather(tokens, ids), stream], 1)
    for stage in model.layers:
        for blk in stage.blocks:
            x = _block(blk, x, ids, H, W)
        if stage.downsample is not None:
            x, ids, active = _merge(stage, x, ids, active, H, W)
            H, W = H // 2, W // 2
    return _to_grid(x, ids, H * W).view(B, H, W, x.shape[-1])
