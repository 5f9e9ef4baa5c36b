"""Window/level: CT presets, modality-aware defaults and a fast window → [0, 1] mapping."""

from __future__ import annotations

import numpy as np

# (center, width) in Hounsfield units; values follow common radiology practice
# (Radiopaedia "windowing (CT)").
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "soft tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "liver": (30.0, 150.0),
    "mediastinum": (50.0, 350.0),
}

#: CT default when the header has no window.
CT_DEFAULT_PRESET = "soft tissue"

#: Modalities whose pixel values are calibrated Hounsfield units.
HU_MODALITIES = frozenset({"CT"})


def presets_for_modality(modality: str | None) -> dict[str, tuple[float, float]]:
    """Presets that make sense for ``modality``: the CT presets for CT, none otherwise."""
    return dict(CT_PRESETS) if (modality or "").upper() in HU_MODALITIES else {}


def window_to_limits(center: float, width: float) -> tuple[float, float]:
    """``(center, width)`` → display ``(low, high)`` (``contrast_limits`` in napari)."""
    half = float(width) / 2.0
    return float(center) - half, float(center) + half


def limits_to_window(low: float, high: float) -> tuple[float, float]:
    return (float(low) + float(high)) / 2.0, float(high) - float(low)


def robust_limits(
    array: np.ndarray, lower: float = 0.5, upper: float = 99.5, max_samples: int = 2_000_000
) -> tuple[float, float]:
    """Percentile contrast limits from a strided subsample (fast on big volumes)."""
    a = np.asarray(array)
    if a.size == 0:
        return 0.0, 1.0
    flat = a.reshape(-1)
    if flat.size > max_samples:  # random (not strided: strides alias with the image width)
        idx = np.random.default_rng(0).integers(0, flat.size, max_samples)
        flat = flat[idx]
    flat = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(flat, [lower, upper])
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def default_window(
    modality: str | None, header_window: tuple[float, float] | None, array: np.ndarray | None = None
) -> tuple[float, float]:
    """The window to show first: the header's, else CT soft tissue for CT, else percentiles."""
    if header_window is not None and header_window[1] > 0:
        return float(header_window[0]), float(header_window[1])
    if (modality or "").upper() in HU_MODALITIES:
        return CT_PRESETS[CT_DEFAULT_PRESET]
    if array is None:
        return 0.5, 1.0
    return limits_to_window(*robust_limits(array))


def window_to_unit(array, center, width, out=None):
    """Map intensities to ``[0, 1]`` float32 through a linear window.

    ``y = clip((x - (center - width/2)) / width, 0, 1)``. Works on NumPy arrays
    and on torch tensors (on any device); ``center``/``width`` may be scalars or
    arrays broadcastable against ``array`` (e.g. one window per batch item).
    One temporary at most: the float32 result (or ``out``).
    """
    if type(array).__module__.startswith("torch"):
        import torch

        x = array.to(torch.float32) if out is None else out.copy_(array)
        if x is array:
            x = x.clone()
        c = torch.as_tensor(center, dtype=torch.float32, device=x.device)
        w = torch.as_tensor(width, dtype=torch.float32, device=x.device)
        return x.sub_(c - w / 2).div_(w).clamp_(0.0, 1.0)
    c = np.asarray(center, dtype=np.float32)
    w = np.asarray(width, dtype=np.float32)
    if np.any(w <= 0):
        raise ValueError(f"window width must be > 0, got {width}")
    res = np.subtract(array, c - w / 2, dtype=np.float32, out=out)
    res *= np.float32(1.0) / w
    return np.clip(res, 0.0, 1.0, out=res)
