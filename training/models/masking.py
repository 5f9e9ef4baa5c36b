"""Window masking for Swin MAE pretraining, vectorised on the device.

The image is tiled into square *mask units* (16×16 px = 4×4 tokens by
default). A fraction ``mask_ratio`` of the units is masked, chosen uniformly at
random per sample. Masks are token-level tensors (B, h*w) in row-major token
order with 1 = masked, 0 = visible, the convention of the official code.

No Python loop over the batch and no host synchronisation: everything is
argsort/scatter/expand on the tensors' device.
"""
from __future__ import annotations

import torch


def num_kept_units(num_units: int, mask_ratio: float) -> int:
    """Units left visible; ``int`` truncation as in the official code (196 -> 49 at 0.75)."""
    return int(num_units * (1 - mask_ratio))


def unit_mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """(B, U) noise -> (B, U) mask: the units with the smallest noise stay visible."""
    keep = num_kept_units(noise.shape[1], mask_ratio)
    ids_keep = noise.argsort(dim=1)[:, :keep]
    mask = torch.ones_like(noise, dtype=torch.float32)
    return mask.scatter_(1, ids_keep, 0.0)


def units_to_tokens(unit_mask: torch.Tensor, units_hw: tuple[int, int], unit: int) -> torch.Tensor:
    """(B, uh*uw) unit mask -> (B, uh*unit * uw*unit) token mask, row-major."""
    B = unit_mask.shape[0]
    uh, uw = units_hw
    m = unit_mask.view(B, uh, 1, uw, 1).expand(B, uh, unit, uw, unit)
    return m.reshape(B, uh * unit * uw * unit)


def random_window_mask(batch: int, grid_hw: tuple[int, int], unit: int, mask_ratio: float,
                       device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh random token mask (B, gh*gw) for a token grid ``grid_hw``.

    ``unit`` is the mask-unit side in tokens; the grid must tile exactly.
    """
    gh, gw = grid_hw
    if gh % unit or gw % unit:
        raise ValueError(f"token grid {gh}x{gw} is not a multiple of the {unit}-token mask unit")
    uh, uw = gh // unit, gw // unit
    noise = torch.rand(batch, uh * uw, device=device, generator=generator)
    return units_to_tokens(unit_mask_from_noise(noise, mask_ratio), (uh, uw), unit)


def mask_to_pixels(mask: torch.Tensor, grid_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, gh*gw) token mask -> (B, 1, gh*p, gw*p) pixel mask, for display."""
    B = mask.shape[0]
    gh, gw = grid_hw
    m = mask.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, patch_size, gw, patch_size)
    return m.reshape(B, 1, gh * patch_size, gw * patch_size)
