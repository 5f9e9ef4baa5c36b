"""How pixels become model input: the ONE definition shared by ``prepare``, pretraining,
fine-tuning, evaluation and inference, recorded in every model card.

Pipeline, for one 2-D slice of raw intensities (HU for CT):

1. grey: RGB(A) -> the mean of the colour channels (:func:`grey`);
2. to [0, 1] (:func:`scale_to_unit`): CT through a HU window (the card's ``ct_window``, or
   with ``ct_window = None`` the file's header window, else :data:`DEFAULT_CT_WINDOW`); every
   other modality through the card's ``percentiles``, computed over the slice
   (``percentile_scope = "slice"``) or over the whole volume (``"volume"``,
   :func:`volume_limits`); NaN -> 0, clipped to [0, 1];
3. resize to ``input_size``² (bilinear, antialiased; :func:`resize_unit`);
4. standardise: ``(x - mean) / std`` (:func:`to_model_input`).

``python -m training.prepare`` runs steps 1-3 and stores uint8 (one extra rounding to 1/255);
pretraining adds step 4 and writes the :class:`Preprocessing` it used into the exported card;
fine-tuning inherits the parent card's unless overridden; inference follows the card.
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
#: CT window (center, width) in HU: the card default, and the fallback of ``ct_window = None``
#: when a file has no header window.
DEFAULT_CT_WINDOW = (40.0, 400.0)
#: Modality strings that mean "unknown": the card's ``modality`` applies instead.
UNKNOWN_MODALITIES = frozenset({"", "OT"})
SCOPES = ("slice", "volume")


@dataclass(frozen=True)
class Preprocessing:
    """Input preprocessing of a model. Stored in the model card under ``preprocessing``."""

    input_size: int = 224
    modality: str | None = None  # for files that do not say ("CT" applies the HU window)
    ct_window: tuple[float, float] | None = DEFAULT_CT_WINDOW  # (center, width); None -> header
    percentiles: tuple[float, float] = (0.5, 99.5)  # 0-1 scaling for non-CT images
    percentile_scope: str = "slice"  # "slice" | "volume": what the percentiles are taken over
    mean: float = VISMAE_MEAN
    std: float = VISMAE_STD

    def __post_init__(self):
        if self.percentile_scope not in SCOPES:
            raise ValueError(f"percentile_scope must be one of {SCOPES}, "
                             f"got {self.percentile_scope!r}")
        if self.ct_window is not None and float(self.ct_window[1]) <= 0:
            raise ValueError(f"CT window width must be > 0, got {self.ct_window}")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, "
                             f"got {self.percentiles}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kw)

    def describe(self) -> str:
        """One line for people: what this preprocessing does."""
        ct = ("the file's header window (else {:g}/{:g})".format(*DEFAULT_CT_WINDOW)
              if self.ct_window is None else "window {:g}/{:g} HU".format(*self.ct_window))
        lo, hi = self.percentiles
        return (f"CT: {ct}; other modalities: {lo:g}-{hi:g} percentiles per "
                f"{self.percentile_scope}; files without a modality: "
                f"{self.modality or 'not CT'}; resize to {self.input_size} px (bilinear, "
                f"antialiased); standardise (x - {self.mean:g}) / {self.std:g}")

    def changes_from(self, other: Preprocessing) -> dict:
        """``{field: (other's, self's)}`` for every field that differs."""
        a, b = other.to_dict(), self.to_dict()
        return {k: (a[k], b[k]) for k in b if a[k] != b[k]}


# Official fine-tuning pipelines feed plain [0, 1] images; their pretraining standardises.
OFFICIAL_FINETUNE = Preprocessing(mean=0.0, std=1.0)
OFFICIAL_PRETRAIN = Preprocessing()


def effective_modality(modality: str | None, prep: Preprocessing) -> str:
    """The file's modality unless it is unknown ("", "OT", None); then the card's."""
    m = (modality or "").upper()
    if m in UNKNOWN_MODALITIES:
        m = (prep.modality or "").upper()
    return m


def grey(image: np.ndarray) -> np.ndarray:
    """RGB(A) ``(..., 3|4)`` -> the mean of the colour channels; anything else unchanged."""
    a = np.asarray(image)
    if a.ndim >= 3 and a.shape[-1] in (3, 4):
        return a[..., :3].astype(np.float32).mean(-1)
    return a


def percentile_limits(values: np.ndarray, percentiles: tuple[float, float],
                      max_samples: int = 2_000_000) -> tuple[float, float] | None:
    """``(low, high)`` percentiles of the finite values (None if there are none). Arrays larger
    than ``max_samples`` use a fixed random subsample (seed 0: deterministic)."""
    flat = np.asarray(values).reshape(-1)
    if flat.size > max_samples:  # subsample before any copy: volumes can be gigabytes
        flat = flat[np.random.default_rng(0).integers(0, flat.size, max_samples)]
    flat = flat.astype(np.float32, copy=False)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    lo, hi = np.percentile(flat, percentiles)
    return float(lo), float(hi)


def volume_limits(volume: np.ndarray, prep: Preprocessing, modality: str | None = None
                  ) -> tuple[float, float] | None:
    """The percentile limits of a whole volume when the card asks for ``percentile_scope =
    "volume"`` and the image is not windowed CT; None otherwise (then each slice is scaled
    on its own). Pass the result to :func:`scale_to_unit` for every slice of that volume."""
    if prep.percentile_scope != "volume" or effective_modality(modality, prep) == "CT":
        return None
    return percentile_limits(grey(volume), prep.percentiles) or (0.0, 0.0)


_LIMITS_CACHE: dict = {}


def cached_volume_limits(volume: np.ndarray, prep: Preprocessing, modality: str | None = None
                         ) -> tuple[float, float] | None:
    """:func:`volume_limits`, remembered for the last few volumes (a training set asks once per
    slice and epoch). The cache holds the volume itself, so its ``id`` cannot be reused."""
    if prep.percentile_scope != "volume":
        return None
    key = (id(volume), prep.percentiles, effective_modality(modality, prep))
    hit = _LIMITS_CACHE.get(key)
    if hit is None or hit[0] is not volume:
        if len(_LIMITS_CACHE) >= 16:
            _LIMITS_CACHE.pop(next(iter(_LIMITS_CACHE)))
        hit = _LIMITS_CACHE[key] = (volume, volume_limits(volume, prep, modality))
    return hit[1]


def scale_to_unit(image: np.ndarray, prep: Preprocessing, modality: str | None = None,
                  window: tuple[float, float] | None = None,
                  limits: tuple[float, float] | None = None) -> np.ndarray:
    """Map one slice's raw intensities (HU for CT) to float32 in [0, 1].

    CT uses the card's ``ct_window`` or, when the card has none, ``window`` (the file's header
    window), else :data:`DEFAULT_CT_WINDOW`. Everything else uses ``limits`` (from
    :func:`volume_limits`) or the card's percentiles over this slice. NaNs become 0.
    """
    x = grey(image).astype(np.float32, copy=False)
    if effective_modality(modality, prep) == "CT":
        win = prep.ct_window or (window if window is not None and window[1] > 0 else None)
        center, width = win or DEFAULT_CT_WINDOW
        lo, hi = center - width / 2.0, center + width / 2.0
    elif limits is not None:
        lo, hi = limits
    else:
        found = percentile_limits(x, prep.percentiles)
        if found is None:
            return np.zeros_like(x)
        lo, hi = found
    out = (x - np.float32(lo)) * np.float32(1.0 / max(float(hi - lo), 1e-6))
    return np.nan_to_num(np.clip(out, 0.0, 1.0, out=out), copy=False).astype(np.float32, copy=False)


def resize_unit(unit: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(B, C, H, W) -> ``input_size``² (bilinear, antialiased); unchanged if already that size."""
    if unit.shape[-2:] != (prep.input_size, prep.input_size):
        unit = F.interpolate(unit, size=(prep.input_size,) * 2, mode="bilinear",
                             align_corners=False, antialias=True)
    return unit


def to_model_input(unit: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> resized to ``input_size`` and standardised."""
    return (resize_unit(unit, prep) - prep.mean) / prep.std


def unit_slices(volume: np.ndarray, prep: Preprocessing, modality: str | None = None,
                window: tuple[float, float] | None = None, indices=None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Slices ``indices`` (all by default) of a grey ``(z, y, x)`` volume (or one 2-D image)
    -> ``(n, 1, S, S)`` float32 in [0, 1] on ``device``: steps 2-3, before standardisation.
    What ``prepare`` stores (as uint8) and what inference standardises and feeds the model."""
    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
    limits = volume_limits(vol, prep, modality)
    idx = range(vol.shape[0]) if indices is None else indices
    unit = np.stack([scale_to_unit(vol[i], prep, modality, window, limits) for i in idx])
    return resize_unit(torch.from_numpy(unit)[:, None].to(device or "cpu"), prep).clamp_(0.0, 1.0)
