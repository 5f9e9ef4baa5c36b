"""Deterministic CT-like phantoms with label maps: for tests, demo models and the
label-efficiency study.

Each *case* is a seeded random abdomen: an elliptical body with a
subcutaneous fat layer and muscle, liver, spleen, two kidneys, a vertebra
(cortical ring + marrow, with a spinous process), aorta, bowel gas and, near
the top of the volume, lung bases. Organ outlines are ellipses whose radius is
modulated by a few low-frequency harmonics, so they are smooth but not
regular, and they grow and shrink along z like ellipsoids. Intensities are
Hounsfield units typical of a portal-venous-phase CT; the clean image is
blurred (partial volume) and Gaussian noise is added.

Label maps use :data:`CLASSES` (0 background, 1 liver, 2 spleen, 3 kidney,
4 bone). The classification variant marks cases with a hypodense liver
lesion (label 1) or none (label 0).

:class:`Variation` makes them harder on purpose (pose, scale, elastic shape, organ
contrast, noise and partial volume, each with its own knob; ``VARIATIONS["hard"]`` turns them
all on) so that a small labelled set no longer covers them. ``Variation()`` (the default)
adds nothing: the standard phantoms are unchanged, byte for byte.

Volumes are (z, y, x) arrays; they can be written as a DICOM CT series with
real geometry (:func:`write_dicom_series`) and as NIfTI (:func:`write_nifti`).
Everything depends only on the seed: the same seed gives the same bytes.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from training.data.phantom_variation import VARIATIONS, Variation  # noqa: F401  (re-exported)
from training.data.phantom_variation import as_variation as _variation
from training.data.phantom_variation import finish_slice as _finish
from training.data.phantom_variation import render_varied as _render_varied
from training.runtime.atomic import atomic_path, atomic_write_bytes

CLASSES: list[dict] = [
    {"index": 0, "name": "background", "color": "#00000000"},
    {"index": 1, "name": "liver", "color": "#D55E00"},
    {"index": 2, "name": "spleen", "color": "#CC79A7"},
    {"index": 3, "name": "kidney", "color": "#E69F00"},
    {"index": 4, "name": "bone", "color": "#F0E442"},
]
CLASS_NAMES = [c["name"] for c in CLASSES]
CLS_CLASSES: list[dict] = [
    {"index": 0, "name": "no lesion", "color": "#009E73"},
    {"index": 1, "name": "liver lesion", "color": "#D55E00"},
]

AIR, LUNG, FAT, MUSCLE = -1000.0, -850.0, -100.0, 45.0
HU = {"liver": 105.0, "spleen": 120.0, "kidney": 170.0, "aorta": 180.0, "marrow": 250.0,
      "cortical": 800.0, "lesion": 45.0, "gas": -900.0}
CT_WINDOW = (40.0, 400.0)  # abdomen window (center, width)


@dataclass
class _Shape:
    """An ellipsoid-like organ: centre/semi-axes in normalised coordinates, harmonics for the
    outline."""

    cx: float
    cy: float
    cz: float
    ax: float
    ay: float
    az: float
    harm: np.ndarray  # (K, 2): amplitude, phase for harmonics k = 2..K+1
    angle: float = 0.0

    def inside(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        dz = (z - self.cz) / self.az
        if abs(dz) >= 1:
            return np.zeros(x.shape, bool)
        s = np.sqrt(1 - dz * dz)  # ellipsoid cross-section shrinks away from cz
        c, si = np.cos(self.angle), np.sin(self.angle)
        u, v = (x - self.cx) * c + (y - self.cy) * si, -(x - self.cx) * si + (y - self.cy) * c
        theta = np.arctan2(v, u)
        r = np.ones_like(theta)
        for k, (amp, ph) in enumerate(self.harm, start=2):
            r += amp * np.cos(k * theta + ph)
        return (u / (self.ax * s)) ** 2 + (v / (self.ay * s)) ** 2 < r**2


def _shape(rng, cx, cy, cz, ax, ay, az, jitter=0.04, scale=0.12, wobble=0.06, angle=0.3) -> _Shape:
    j = lambda v, d: v + rng.uniform(-d, d)  # noqa: E731
    f = lambda v: v * (1 + rng.uniform(-scale, scale))  # noqa: E731
    harm = np.stack([rng.uniform(0, wobble, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    return _Shape(j(cx, jitter), j(cy, jitter), j(cz, 0.1), f(ax), f(ay), f(az), harm,
                  rng.uniform(-angle, angle))


class PhantomCase:
    """One random abdomen; :meth:`render` draws any axial position ``z`` in [-1, 1]."""

    def __init__(self, seed: int, lesion: bool | None = None):
        rng = np.random.default_rng([seed, 20240203])
        self.seed = seed
        self.body = _shape(rng, 0.0, 0.0, 0.0, 0.88, 0.66, 9.0, jitter=0.03, scale=0.06,
                           wobble=0.03, angle=0.05)
        self.fat = rng.uniform(0.06, 0.14)  # subcutaneous fat thickness (fraction of body)
        self.liver = _shape(rng, -0.38, -0.05, 0.35, 0.38, 0.40, 0.75, angle=0.4)
        self.spleen = _shape(rng, 0.48, 0.12, 0.35, 0.14, 0.22, 0.45)
        kz = rng.uniform(-0.35, -0.15)
        self.kidneys = [_shape(rng, sx * 0.32, 0.30, kz, 0.10, 0.14, 0.45, angle=0.5)
                        for sx in (-1, 1)]
        self.aorta = _shape(rng, 0.06, 0.26, 0.0, 0.055, 0.055, 9.0, jitter=0.01, scale=0.1,
                            wobble=0.01)
        self.vertebra = _shape(rng, 0.0, 0.45, 0.0, 0.13, 0.11, 9.0, jitter=0.02, scale=0.08,
                               wobble=0.02, angle=0.05)
        self.spinous = _shape(rng, 0.0, 0.62, 0.0, 0.035, 0.09, 9.0, jitter=0.01, scale=0.1,
                              wobble=0.0, angle=0.05)
        self.lungs = [_shape(rng, sx * 0.40, 0.05, 1.25, 0.30, 0.45, 0.6, wobble=0.04)
                      for sx in (-1, 1)]
        self.gas = [_shape(rng, rng.uniform(-0.2, 0.35), rng.uniform(-0.45, 0.0),
                           rng.uniform(-0.9, 0.6), rng.uniform(0.03, 0.08),
                           rng.uniform(0.03, 0.07), rng.uniform(0.1, 0.3), jitter=0.0)
                    for _ in range(rng.integers(2, 6))]
        self.has_lesion = bool(rng.random() < 0.5) if lesion is None else bool(lesion)
        lz = rng.uniform(0.1, 0.45)
        self.lesion = _shape(rng, self.liver.cx + rng.uniform(-0.12, 0.12),
                             self.liver.cy + rng.uniform(-0.15, 0.15), lz,
                             rng.uniform(0.07, 0.11), rng.uniform(0.07, 0.11), 0.5,
                             jitter=0.0, wobble=0.05)
        self.lesion.cz = lz
        self.muscle_hu = MUSCLE + rng.normal(0, 5)
        self.organ_hu = {k: v + rng.normal(0, 8) for k, v in HU.items()}

    def render(self, z: float, size: int | tuple[int, int],
               warp=None) -> tuple[np.ndarray, np.ndarray]:
        """-> (clean HU image, label map) of one axial slice, (H, W) float32 / uint8.

        ``warp``: optional ``(x, y) -> (x, y)`` applied to the sampling grid (pose, scale,
        elastic deformation: image and labels move together)."""
        h, w = (size, size) if np.isscalar(size) else size
        y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32) * (h / max(h, w)),
                           np.linspace(-1, 1, w, dtype=np.float32) * (w / max(h, w)),
                           indexing="ij")
        if warp is not None:
            x, y = warp(x, y)
        img = np.full((h, w), AIR, np.float32)
        lab = np.zeros((h, w), np.uint8)
        hu = self.organ_hu
        body = self.body.inside(x, y, z)
        img[body] = FAT
        inner = _Shape(self.body.cx, self.body.cy, self.body.cz, self.body.ax * (1 - self.fat),
                       self.body.ay * (1 - self.fat), self.body.az, self.body.harm, self.body.angle)
        core = inner.inside(x, y, z)
        img[core] = self.muscle_hu
        for lung in self.lungs:
            m = lung.inside(x, y, z) & core
            img[m] = LUNG
        for g in self.gas:
            img[g.inside(x, y, z) & core] = hu["gas"]
        for name, shapes, label in (("liver", [self.liver], 1), ("spleen", [self.spleen], 2),
                                    ("kidney", self.kidneys, 3)):
            for s in shapes:
                m = s.inside(x, y, z) & core
                img[m] = hu[name]
                lab[m] = label
        if self.has_lesion:
            m = self.lesion.inside(x, y, z) & (lab == 1)
            img[m] = hu["lesion"]
        img[self.aorta.inside(x, y, z) & core] = hu["aorta"]
        lab[self.aorta.inside(x, y, z) & core] = 0
        vert = self.vertebra.inside(x, y, z) | self.spinous.inside(x, y, z)
        marrow = _Shape(self.vertebra.cx, self.vertebra.cy, 0.0, self.vertebra.ax * 0.72,
                        self.vertebra.ay * 0.72, 9.0, self.vertebra.harm,
                        self.vertebra.angle).inside(x, y, z)
        img[vert] = hu["cortical"]
        img[marrow] = hu["marrow"]
        lab[vert | marrow] = 4
        return img, lab


def make_volume(seed: int, shape: tuple[int, int, int] = (24, 128, 128),
                spacing: tuple[float, float, float] = (5.0, 2.5, 2.5), noise_hu: float = 12.0,
                blur_px: float = 0.7, lesion: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A phantom volume: (HU float32 (z, y, x), labels uint8 (z, y, x)); ``spacing`` in mm
    (z, y, x).

    The slices span z in [-0.95, 0.95] of the case, top of the abdomen last.
    ``spacing`` only matters for the files written later (the anatomy is
    normalised to the field of view).
    """
    case = PhantomCase(seed, lesion)
    rng = np.random.default_rng([seed, 7])
    nz, h, w = shape
    zs = np.linspace(-0.95, 0.95, nz) if nz > 1 else np.array([0.2])
    imgs, labs = zip(*(case.render(float(z), (h, w)) for z in zs), strict=False)
    clean = np.stack(imgs)
    blurred = np.stack([gaussian_filter(s, blur_px) for s in clean]) if blur_px > 0 else clean
    vol = (blurred + rng.normal(0, noise_hu, clean.shape)).astype(np.float32)
    return vol, np.stack(labs)


def make_slices(n: int, seed: int = 0, size: int = 64, noise_hu: float = 12.0,
                blur_px: float = 0.7, z_range: tuple[float, float] = (-0.5, 0.6),
                lesion: bool | None = None, return_cases: bool = False,
                variation: Variation | str | None = None):
    """``n`` independent 2-D phantoms -> (images HU (n, size, size), labels (n, size, size) uint8).

    Slice ``i`` comes from case ``seed * 1_000_003 + i`` at a random z in
    ``z_range`` (the span where the labelled organs appear), so different
    seeds give disjoint cases. With ``return_cases`` also a bool array: does
    the case have a liver lesion (the classification target)? ``variation``: a
    :class:`Variation` or a name in :data:`VARIATIONS` (default: none).
    """
    var = _variation(variation)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    images = np.empty((n, size, size), np.float32)
    labels = np.empty((n, size, size), np.uint8)
    lesions = np.zeros(n, bool)
    for i in range(n):
        case_seed = seed * 1_000_003 + i
        case = PhantomCase(case_seed, lesion)
        rng = np.random.default_rng([case_seed, 11])
        z = rng.uniform(*z_range)
        if var.is_none():
            clean, lab = case.render(z, size)
            images[i] = _finish(clean, rng, noise_hu, blur_px)
        else:
            images[i], lab = _render_varied(case, z, size, var, case_seed, noise_hu, blur_px, rng)
        labels[i] = lab
        lesions[i] = case.has_lesion
    return (images, labels, lesions) if return_cases else (images, labels)


def make_classification_set(n: int, seed: int = 0, size: int = 64, **kw):
    """``n`` slices through the liver, half with a hypodense lesion -> (images HU, labels int64).

    Labels: 0 no lesion, 1 lesion (:data:`CLS_CLASSES`). The slice is taken at
    the lesion's level, so a positive case always shows it.
    """
    var = _variation(kw.get("variation"))
    images = np.empty((n, size, size), np.float32)
    labels = np.empty(n, np.int64)
    for i in range(n):
        case_seed = seed * 1_000_003 + i
        case = PhantomCase(case_seed, lesion=(i % 2 == 1))
        rng = np.random.default_rng([case_seed, 13])
        noise_hu, blur_px = kw.get("noise_hu", 12.0), kw.get("blur_px", 0.7)
        if var.is_none():
            clean, _ = case.render(case.lesion.cz, size)
            images[i] = _finish(clean, rng, noise_hu, blur_px)
        else:
            images[i] = _render_varied(case, case.lesion.cz, size, var, case_seed, noise_hu,
                                       blur_px, rng)[0]
        labels[i] = int(case.has_lesion)
    order = np.random.default_rng([seed, 17]).permutation(n)
    return images[order], labels[order]


# -- files ---------------------------------------------------------------------------------------
def nifti_affine(spacing=(5.0, 2.5, 2.5), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel (x, y, z) -> RAS mm for a volume stored (z, y, x) with ``spacing`` (z, y, x),
    placed as :func:`write_dicom_series` places it (columns towards the patient's left,
    rows towards posterior, ``origin`` in LPS), so both files hold the same patient."""
    aff = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    aff[:3, 3] = (-origin[0], -origin[1], origin[2])
    return aff


def write_nifti(array: np.ndarray, path: str | os.PathLike, spacing=(5.0, 2.5, 2.5),
                origin=(0.0, 0.0, 0.0)) -> Path:
    """Write a (z, y, x) array as NIfTI-1 (stored x, y, z as NIfTI expects); returns the path.

    Label maps (integer dtypes) are stored as uint8/int16, images as float32.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[None]
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.uint8 if data.max(initial=0) < 256 and data.min(initial=0) >= 0
                           else np.int16)
    else:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)),
                          nifti_affine(spacing, origin))
    img.header.set_xyzt_units("mm")
    data_bytes = img.to_bytes()
    if path.name.endswith(".gz"):
        data_bytes = gzip.compress(data_bytes, mtime=0)
    atomic_write_bytes(path, data_bytes)
    return path


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI -> (array (z, y, x), affine). 2-D files give one slice."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D NIfTI, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)), img.affine


def write_dicom_series(volume_hu: np.ndarray, directory: str | os.PathLike,
                       spacing=(5.0, 2.5, 2.5), origin=(0.0, 0.0, 0.0), seed: int = 0,
                       window: tuple[float, float] = CT_WINDOW,
                       description: str = "napari-vismae synthetic phantom") -> list[Path]:
    """Write a (z, y, x) HU volume as an axial CT series, one file per slice.

    Geometry is real: ImagePositionPatient steps along the slice normal by the
    z spacing, ImageOrientationPatient is axial, PixelSpacing is (row, column).
    Pixels are uint16 with RescaleIntercept -1024. UIDs derive from ``seed``,
    so files are reproducible.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(volume_hu)
    if vol.ndim == 2:
        vol = vol[None]
    stored = np.clip(np.round(vol) + 1024, 0, 65535).astype(np.uint16)
    ent = [f"napari-vismae-phantom-{seed}"]
    study = generate_uid(entropy_srcs=ent + ["study"])
    series = generate_uid(entropy_srcs=ent + ["series"])
    frame = generate_uid(entropy_srcs=ent + ["frame"])
    paths = []
    for k in range(vol.shape[0]):
        sop = generate_uid(entropy_srcs=ent + [f"slice{k}"])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID = f"Phantom^{seed}", f"PHANTOM{seed:06d}"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.SeriesDescription = description
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]),
                                   float(origin[2] + k * spacing[0])]
        ds.SliceLocation = float(origin[2] + k * spacing[0])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
        ds.PixelData = stored[k].tobytes()
        path = directory / f"slice_{k:04d}.dcm"
        with atomic_path(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_case(seed: int, directory: str | os.PathLike, shape=(24, 128, 128),
               spacing=(5.0, 2.5, 2.5), dicom: bool = True, nifti: bool = True) -> dict:
    """A phantom case on disk: ``images/case{seed}.nii.gz``, ``dicom/case{seed}/``,
    ``labels/case{seed}.nii.gz``."""
    d = Path(directory)
    vol, lab = make_volume(seed, shape, spacing)
    name = f"case{seed:04d}"
    out = {"labels": write_nifti(lab, d / "labels" / f"{name}.nii.gz", spacing)}
    if nifti:
        out["nifti"] = write_nifti(vol, d / "images" / f"{name}.nii.gz", spacing)
    if dicom:
        out["dicom"] = write_dicom_series(vol, d / "dicom" / name, spacing, seed=seed)[0].parent
    return out


def write_png_folder(directory: str | os.PathLike, n: int, seed: int = 0, size: int = 64,
                     variation: Variation | str | None = None,
                     window: tuple[float, float] = CT_WINDOW) -> list[Path]:
    """``n`` phantom slices (:func:`make_slices`) as 8-bit PNGs through the CT ``window``:
    an unlabelled image folder for ``python -m training.pretrain --data``."""
    from skimage.io import imsave

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    images, _ = make_slices(n, seed, size, variation=variation)
    lo = window[0] - window[1] / 2
    u8 = (np.clip((images - lo) / window[1], 0, 1) * 255).round().astype(np.uint8)
    paths = []
    for i, img in enumerate(u8):
        path = d / f"phantom_{seed}_{i:05d}.png"
        with atomic_path(path, suffix=".png") as tmp:
            imsave(tmp, img, check_contrast=False)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.data.synthetic",
                                description="Write synthetic CT phantom slices as PNGs (CT "
                                            "window 40/400), e.g. to pretrain on.")
    p.add_argument("out", help="folder for the PNGs")
    p.add_argument("--n", type=int, default=800, help="number of slices (default: 800)")
    p.add_argument("--seed", type=int, default=1, help="phantom seed: different seeds give "
                                                       "disjoint cases (default: 1)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--variation", default="standard", choices=sorted(VARIATIONS),
                   help="phantom variation (default: standard)")
    a = p.parse_args(argv)
    paths = write_png_folder(a.out, a.n, a.seed, a.size, a.variation)
    print(f"wrote {len(paths)} phantoms to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
