"""Joint image/mask augmentation on batched tensors (torch only, runs on the training device).

Geometry: each sample gets one affine transform composed of a random
rot90/flip (the official ``random_rot_flip``, p=0.5) and a small affine
(rotation, isotropic scale, translation; p=0.5), resampled in one
``grid_sample`` call: bilinear for images, nearest for masks, zeros outside
(0 = air/black in [0, 1] images, background in masks). A pure rot90/flip maps
pixel centres onto pixel centres, so it is lossless.

Intensity (images only, p=0.5 each): brightness shift, contrast scale and
gamma, on the [0, 1] image before standardisation, clamped back to [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    p_rot_flip: float = 0.5
    p_affine: float = 0.5
    max_rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    max_translate: float = 0.05  # fraction of the image side
    p_intensity: float = 0.5
    brightness: float = 0.1  # +- additive, in [0, 1] units
    contrast: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.25)


def _uniform(n, lo, hi, g, device):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def random_affine(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """(n, 2, 3) matrices for ``F.affine_grid`` (output -> input normalised coordinates)."""
    g, dev = generator, device
    eye = torch.eye(2, device=dev).expand(n, 2, 2)
    # rot90 k times, then an optional flip of x
    k = torch.randint(0, 4, (n,), generator=g, device=dev)
    ang = k.float() * (math.pi / 2)
    rot = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1),
                       torch.stack([ang.sin(), ang.cos()], -1)], -2).round()
    flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    flip_m = torch.diag_embed(torch.stack([flip, torch.ones_like(flip)], -1))
    use_rf = (torch.rand(n, generator=g, device=dev) < cfg.p_rot_flip).view(n, 1, 1)
    A = torch.where(use_rf, rot @ flip_m, eye)
    # small affine
    th = _uniform(n, -1, 1, g, dev) * math.radians(cfg.max_rotate_deg)
    s = _uniform(n, *cfg.scale, g, dev)
    small = torch.stack([torch.stack([th.cos(), -th.sin()], -1),
                         torch.stack([th.sin(), th.cos()], -1)], -2) / s.view(n, 1, 1)
    t = _uniform(2 * n, -1, 1, g, dev).view(n, 2) * (2 * cfg.max_translate)
    use_aff = (torch.rand(n, generator=g, device=dev) < cfg.p_affine)
    A = torch.where(use_aff.view(n, 1, 1), small @ A, A)
    t = torch.where(use_aff.view(n, 1), t, torch.zeros_like(t))
    return torch.cat([A, t.unsqueeze(-1)], dim=-1)


def apply_affine(image: torch.Tensor, mask: torch.Tensor | None, theta: torch.Tensor):
    """Resample (B, C, H, W) images bilinearly and (B, H, W) masks by nearest neighbour."""
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if mask is not None:
        m = F.grid_sample(mask[:, None].to(image.dtype), grid, mode="nearest",
                          padding_mode="zeros", align_corners=False)
        mask = m[:, 0].round().long()
    return out, mask


def intensity_jitter(image: torch.Tensor, cfg: AugmentConfig,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast (about the image mean) and gamma on [0, 1] images."""
    n, dev, g = image.shape[0], image.device, generator
    shape = (n,) + (1,) * (image.ndim - 1)

    def pick(values, neutral):
        on = torch.rand(n, generator=g, device=dev) < cfg.p_intensity
        return torch.where(on, values, torch.full_like(values, neutral)).view(shape)

    b = pick(_uniform(n, -cfg.brightness, cfg.brightness, g, dev), 0.0)
    c = pick(_uniform(n, *cfg.contrast, g, dev), 1.0)
    gam = pick(torch.exp(_uniform(n, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), g, dev)), 1.0)
    mean = image.mean(dim=tuple(range(1, image.ndim)), keepdim=True)
    x = ((image - mean) * c + mean + b).clamp(0.0, 1.0)
    return x.pow(gam)


def augment_batch(image: torch.Tensor, mask: torch.Tensor | None = None,
                  cfg: AugmentConfig | None = None, generator: torch.Generator | None = None):
    """Augment a batch of [0, 1] images (B, C, H, W) and optional masks (B, H, W) jointly.

    ``generator`` must live on the images' device (or be None). Returns
    ``(image, mask)``; masks stay integer class ids.
    """
    cfg = cfg or AugmentConfig()
    theta = random_affine(image.shape[0], cfg, generator, image.device)
    image, mask = apply_affine(image, mask, theta)
    return intensity_jitter(image, cfg, generator), mask


# -- pretraining: one image at a time, seeded per sample -----------------------------------------
@dataclass(frozen=True)
class PretrainAugment:
    """Per-sample augmentation of the MAE pretraining images (one [0, 1] image at a time).

    A random resized crop (area fraction in ``[crop_scale, 1]`` of the image, aspect ratio
    in ``ratio``), a rotation of up to ``rotate_deg`` either way and a horizontal flip
    (p=0.5), resampled in one bilinear ``grid_sample`` (zeros outside the image), then, with
    probability ``p_intensity``, brightness ``+-intensity``, contrast about the image mean
    ``x U(1 - 2 intensity, 1 + 2 intensity)`` and gamma ``exp U(-2 intensity, 2 intensity)``,
    clamped to [0, 1]. Every draw comes from the generator given, so a sample is a function
    of its seed alone (exact resume, DDP = one process).
    """

    crop_scale: float = 0.5
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_deg: float = 10.0
    flip: bool = True
    intensity: float = 0.1
    p_intensity: float = 0.8

    def __post_init__(self):
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.intensity < 0.5:
            raise ValueError(f"intensity jitter must be in [0, 0.5), got {self.intensity}")
        if self.rotate_deg < 0:
            raise ValueError(f"rotation must be >= 0 degrees, got {self.rotate_deg}")

    def to_dict(self) -> dict:
        return {"crop_scale": self.crop_scale, "ratio": list(self.ratio),
                "rotate_deg": self.rotate_deg, "flip": self.flip, "intensity": self.intensity,
                "p_intensity": self.p_intensity}


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def pretrain_augment(x: torch.Tensor, cfg: PretrainAugment, g: torch.Generator) -> torch.Tensor:
    """(C, H, W) [0, 1] image -> augmented (C, H, W), drawn from ``g`` (CPU generator)."""
    # random resized crop: side fractions (w, h) of the image, centre anywhere it fits
    area = _u(g, cfg.crop_scale, 1.0)
    log_r = _u(g, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    r = math.exp(log_r)
    w, h = min(1.0, math.sqrt(area * r)), min(1.0, math.sqrt(area / r))
    cx, cy = _u(g, -(1 - w), 1 - w), _u(g, -(1 - h), 1 - h)  # normalised [-1, 1] coordinates
    th = math.radians(_u(g, -cfg.rotate_deg, cfg.rotate_deg))
    flip = -1.0 if (cfg.flip and float(torch.rand((), generator=g)) < 0.5) else 1.0
    c, s = math.cos(th), math.sin(th)
    # output (u, v) -> input: rotate, then scale to the crop, then shift to its centre
    theta = torch.tensor([[[c * w * flip, -s * w, cx], [s * h * flip, c * h, cy]]],
                         dtype=torch.float32)
    if not (w == 1.0 and h == 1.0 and th == 0.0 and flip == 1.0):
        grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
        x = F.grid_sample(x[None].float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0]
    on = float(torch.rand((), generator=g)) < cfg.p_intensity
    b = _u(g, -cfg.intensity, cfg.intensity)
    k = _u(g, 1 - 2 * cfg.intensity, 1 + 2 * cfg.intensity)
    gam = math.exp(_u(g, -2 * cfg.intensity, 2 * cfg.intensity))
    if on and cfg.intensity > 0:
        m = x.mean()
        x = ((x - m) * k + m + b).clamp(0.0, 1.0).pow(gam)
    return x.contiguous()
