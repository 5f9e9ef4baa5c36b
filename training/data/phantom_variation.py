"""Extra, seeded variation of the synthetic phantoms (pose, size, elastic shape, organ contrast,
noise, partial volume) and the final blur + noise every phantom slice gets."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class Variation:
    """Extra, seeded variation of the 2-D phantoms (:func:`make_slices`,
    :func:`make_classification_set`); every field 0 = none (the standard phantoms).

    - ``pose_deg``: in-plane rotation of the whole slice, uniform in +-``pose_deg``;
    - ``shift``: translation, uniform in +-``shift`` of the half field of view, per axis;
    - ``scale``: patient size, x ``exp U(+-scale)``;
    - ``elastic``: smooth random displacement (about 3 bumps across), amplitude ``elastic``
      of the half field of view: organ shapes bend, labels follow;
    - ``contrast_hu``: per-case organ HU offsets with this standard deviation (on top of the
      8 HU the anatomy already has), so organs can approach their neighbours' intensity;
    - ``noise``: noise level x ``exp U(+-noise)``;
    - ``partial_volume``: in-plane blur x ``exp U(+-partial_volume)`` and a slab of
      thickness up to ``partial_volume x 0.1`` of the z range averaged (thick-slice partial
      volume: organ edges in z fade into their neighbours; labels at the slab centre).
    """

    pose_deg: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    elastic: float = 0.0
    contrast_hu: float = 0.0
    noise: float = 0.0
    partial_volume: float = 0.0

    def is_none(self) -> bool:
        return not any(asdict(self).values())

    def to_dict(self) -> dict:
        return asdict(self)


VARIATIONS = {
    "standard": Variation(),
    "hard": Variation(pose_deg=20.0, shift=0.1, scale=0.15, elastic=0.05, contrast_hu=20.0,
                      noise=0.7, partial_volume=0.7),
}


def as_variation(v: Variation | str | None) -> Variation:
    """A :class:`Variation`, or the name of one in :data:`VARIATIONS`."""
    if v is None:
        return Variation()
    if isinstance(v, Variation):
        return v
    try:
        return VARIATIONS[v]
    except KeyError:
        raise ValueError(f"unknown phantom variation {v!r}; choose from {sorted(VARIATIONS)}") \
            from None


def render_varied(case, z: float, size: int, var: Variation, case_seed: int,
                   noise_hu: float, blur_px: float, rng: np.random.Generator):
    """A varied slice of ``case`` (a :class:`training.data.synthetic.PhantomCase`): (HU image,
    labels). Draws come from their own generator (``[case_seed, 29]``), so the anatomy and
    the standard noise stay those of the seed."""
    vr = np.random.default_rng([case_seed, 29])
    th = np.radians(vr.uniform(-var.pose_deg, var.pose_deg))
    sx, sy = vr.uniform(-var.shift, var.shift, 2)
    k = float(np.exp(vr.uniform(-var.scale, var.scale)))
    field = None
    if var.elastic > 0:
        coarse = vr.normal(0, 1, (2, 6, 6))
        from scipy.ndimage import zoom
        field = np.stack([gaussian_filter(zoom(c, size / 6, order=3), size / 8) for c in coarse])
        field *= var.elastic / max(np.abs(field).max(), 1e-6)
    c, si = np.cos(th), np.sin(th)

    def warp(x, y):
        # output -> anatomy coordinates: undo the shift, rotation and size change
        u, v = x - sx, y - sy
        u, v = (c * u + si * v) / k, (-si * u + c * v) / k
        if field is not None:
            u, v = u + field[0], v + field[1]
        return u.astype(np.float32), v.astype(np.float32)

    for name in case.organ_hu:
        case.organ_hu[name] += vr.normal(0, var.contrast_hu) if var.contrast_hu else 0.0
    case.muscle_hu += vr.normal(0, var.contrast_hu) if var.contrast_hu else 0.0
    clean, lab = case.render(z, size, warp)
    if var.partial_volume > 0:
        dz = vr.uniform(0, var.partial_volume * 0.1)
        slab = [case.render(z + d, size, warp)[0] for d in (-dz, dz)]
        clean = (clean + slab[0] + slab[1]) / 3
    blur = blur_px * float(np.exp(vr.uniform(-var.partial_volume, var.partial_volume)))
    noise = noise_hu * float(np.exp(vr.uniform(-var.noise, var.noise)))
    return finish_slice(clean, rng, noise, blur), lab


def finish_slice(clean: np.ndarray, rng: np.random.Generator, noise_hu: float, blur_px: float):
    img = gaussian_filter(clean, blur_px) if blur_px > 0 else clean
    return (img + rng.normal(0, noise_hu, img.shape)).astype(np.float32)
