"""A real labelled volume for studies and benchmarks: the MNI152 T1 template with grey- and
white-matter labels, as shipped inside the nilearn package (no download, no patient data).

The files are the ICBM 2009a symmetric template at 1 mm (197 x 233 x 189 voxels, an average
of 152 brains) and its tissue probability maps. Labels are the most probable of
(1 - GM - WM, GM, WM): 0 background (incl. CSF and everything outside the brain), 1 grey
matter, 2 white matter (:data:`CLASSES`).

Slices are axial, displayed radiologically (anterior up, patient right on the left) as (z, y, x)
arrays with z from inferior to superior. Only slices in which brain tissue covers at least
``min_brain`` of the slice are kept.

**Leak-free splits** (:func:`split_blocks`): neighbouring 1 mm slices are nearly identical, so
a random slice split would test on near-copies of training slices. The kept slices are cut
into contiguous blocks of ``block`` slices, ``gap`` slices are dropped between neighbouring
blocks, and the blocks are dealt out to the splits in ``pattern`` order (repeated). With the
defaults (blocks of 12, gaps of 4, pattern train/train/val/test) no test slice lies within
4 mm of a training slice and every split spans the brain from bottom to top::

    from training.data.mni152 import mni152_slices
    images, masks = mni152_slices("train")   # (N, 233, 197) float32, (N, 233, 197) uint8

nibabel reads the files; nilearn itself is never imported (only its package folder is
located), so this costs no scikit-learn/pandas import.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CLASSES: list[dict] = [
    {"index": 0, "name": "background", "color": "#00000000"},
    {"index": 1, "name": "grey matter", "color": "#E69F00"},
    {"index": 2, "name": "white matter", "color": "#56B4E9"},
]
FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
         "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
         "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
SPLITS = ("train", "val", "test")
DEFAULT_PATTERN = ("train", "train", "val", "test")
SOURCE = ("MNI152 ICBM 2009a symmetric T1 template, 1 mm, with grey/white-matter probability "
          "maps (shipped in the nilearn package); labels = argmax(1-GM-WM, GM, WM)")


class MNI152Unavailable(RuntimeError):
    """nilearn (which ships the template files) is not installed, or its files are missing."""


def data_folder() -> Path:
    """The folder inside the installed nilearn package that holds the MNI152 files."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise MNI152Unavailable("the MNI152 template ships inside the 'nilearn' package: "
                                "pip install nilearn")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [f for f in FILES.values() if not (folder / f).is_file()]
    if missing:
        raise MNI152Unavailable(f"{folder}: nilearn's MNI152 files are missing: "
                                f"{', '.join(missing)}")
    return folder


@dataclass(frozen=True)
class MNI152:
    """The kept axial slices: ``image`` (Z, Y, X) float32 T1 intensity (0-255 scale),
    ``labels`` (Z, Y, X) uint8, ``z`` the slice index in the full volume, 1 mm spacing."""

    image: np.ndarray
    labels: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _axial(a: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) voxel array -> (z, y, x) axial slices, anterior up, patient right left."""
    return np.ascontiguousarray(a[::-1, ::-1, :].transpose(2, 1, 0))


@lru_cache(maxsize=2)
def load_mni152(min_brain: float = 0.02) -> MNI152:
    """Read the template and tissue maps; keep axial slices with >= ``min_brain`` brain."""
    import nibabel as nib

    if not 0.0 <= min_brain < 1.0:
        raise ValueError(f"min_brain must be in [0, 1), got {min_brain}")
    folder = data_folder()
    imgs = {k: nib.load(folder / f) for k, f in FILES.items()}
    if nib.aff2axcodes(imgs["t1"].affine) != ("R", "A", "S"):
        raise MNI152Unavailable(f"{folder / FILES['t1']}: expected RAS orientation, got "
                                f"{nib.aff2axcodes(imgs['t1'].affine)}")
    shapes = {k: im.shape for k, im in imgs.items()}
    if len(set(shapes.values())) != 1:
        raise MNI152Unavailable(f"{folder}: template and tissue maps differ in shape: {shapes}")
    t1 = _axial(np.asarray(imgs["t1"].dataobj, dtype=np.float32))
    gm = _axial(np.asarray(imgs["gm"].dataobj, dtype=np.float32) / 255.0)
    wm = _axial(np.asarray(imgs["wm"].dataobj, dtype=np.float32) / 255.0)
    labels = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
    brain = (labels > 0).mean(axis=(1, 2))
    keep = np.nonzero(brain >= min_brain)[0]
    if keep.size == 0:
        raise ValueError(f"no axial slice has >= {min_brain:.0%} brain")
    return MNI152(image=t1[keep], labels=labels[keep], z=keep)


def split_blocks(n: int, block: int = 12, gap: int = 4,
                 pattern: tuple[str, ...] = DEFAULT_PATTERN) -> dict[str, np.ndarray]:
    """Deal ``n`` ordered slices out in contiguous blocks: {split name: slice indices}.

    Blocks of ``block`` slices follow each other with ``gap`` slices dropped in between and
    go to ``pattern[0]``, ``pattern[1]``, ... (repeating). A trailing block shorter than half
    ``block`` is dropped."""
    if block < 1 or gap < 0:
        raise ValueError(f"block must be >= 1 and gap >= 0, got block={block}, gap={gap}")
    if not pattern:
        raise ValueError("pattern must name at least one split")
    out: dict[str, list[int]] = {name: [] for name in dict.fromkeys(pattern)}
    start, k = 0, 0
    while start < n:
        idx = list(range(start, min(start + block, n)))
        if len(idx) >= max(1, block // 2):
            out[pattern[k % len(pattern)]].extend(idx)
        start += block + gap
        k += 1
    return {name: np.asarray(v, dtype=np.int64) for name, v in out.items()}


def mni152_slices(split: str = "train", block: int = 12, gap: int = 4,
                  pattern: tuple[str, ...] = DEFAULT_PATTERN, min_brain: float = 0.02
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of one split, in inferior-to-superior order (a sub-volume of blocks)."""
    vol = load_mni152(min_brain)
    splits = split_blocks(len(vol.z), block, gap, tuple(pattern))
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; the pattern {tuple(pattern)} gives "
                         f"{sorted(splits)}")
    idx = splits[split]
    return vol.image[idx], vol.labels[idx]
