"""How pixels become model input: the single definition shared by pretraining,
fine-tuning and inference, recorded in every model card.

Pipeline: intensities -> [0, 1] (CT: a HU window; other modalities: robust
percentiles) -> resize to ``input_size`` -> ``(x - mean) / std``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The official VIS-MAE pretraining statistics ("rin" mean/std), applied after 0-1 scaling.
VISMAE_MEAN = 0.223
VISMAE_STD = 0.202


@dataclass(frozen=True)
class Preprocessing:
    """Input preprocessing of a model. Stored in the model card under ``preprocessing``."""

    input_size: int = 224
    modality: str | None = None  # "CT", "MR", "PT", "CR", "US" ... or None for any
    ct_window: tuple[float, float] | None = (40.0, 400.0)  # (center, width) HU; None -> header
    percentiles: tuple[float, float] = (0.5, 99.5)  # 0-1 scaling for non-CT images
    mean: float = VISMAE_MEAN
    std: float = VISMAE_STD

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kw)


# Official fine-tuning pipelines feed plain [0, 1] images; their pretraining standardises.
OFFICIAL_FINETUNE = Preprocessing(mean=0.0, std=1.0)
OFFICIAL_PRETRAIN = Preprocessing()


def scale_to_unit(image: np.ndarray, prep: Preprocessing, modality: str | None = None,
                  window: tuple[float, float] | None = None) -> np.ndarray:
    """Map raw intensities (HU for CT) to float32 in [0, 1].

    CT uses the card's ``ct_window`` (the window the model was trained with) or,
    when the card has none, ``window`` (e.g. from the DICOM header); everything
    else uses the card's percentiles over the whole array. NaNs become 0.
    """
    x = np.asarray(image, dtype=np.float32)
    modality = (modality or prep.modality or "").upper()
    if modality == "CT" and (prep.ct_window or window):
        center, width = prep.ct_window or window
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return np.zeros_like(x)
        lo, hi = np.percentile(finite, prep.percentiles)
    out = (x - np.float32(lo)) * np.float32(1.0 / max(float(hi - lo), 1e-6))
    return np.nan_to_num(np.clip(out, 0.0, 1.0, out=out), copy=False).astype(np.float32, copy=False)


def to_model_input(unit: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> resized to ``input_size`` and standardised."""
    if unit.shape[-2:] != (prep.input_size, prep.input_size):
        unit = F.interpolate(unit, size=(prep.input_size,) * 2, mode="bilinear",
                             align_corners=False, antialias=True)
    return (unit - prep.mean) / prep.std
