"""The study's datasets: labelled pool, validation and test sets, and the unlabelled
pretraining images, each built so that nothing of the test set reaches training.

* ``phantoms``: synthetic CT phantoms (:mod:`training.data.synthetic`), one disjoint phantom
  seed per pool (pretraining, labelled, validation, test), variation ``cfg.phantoms``.
* ``mni152``: the MNI152 T1 template with grey/white-matter labels (:mod:`training.data.mni152`),
  axial slices dealt out in contiguous blocks with dropped gap slices (no test slice within
  ``mni_gap`` mm of a training slice). The unlabelled pretraining pool is the *training*
  block's slices only (their labels unused): neither validation nor test slices are ever
  seen by pretraining.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.data.datasets import ArrayDataset
from training.data.preprocessing import Preprocessing


@dataclass
class StudyData:
    name: str
    pool: object  # labelled pool (fractions are drawn from it)
    val: object
    test: object
    unlabeled: torch.Tensor  # (N, 1, S, S) in [0, 1], model resolution
    check: torch.Tensor  # (n, 1, S, S) in [0, 1]: held out of pretraining, for the input check
    classes: list[dict]
    prep: Preprocessing
    description: str


def phantom_data(cfg) -> StudyData:
    from training.data.synthetic import CLASSES, make_slices

    seeds = (cfg.pretrain_seed, cfg.labeled_seed, cfg.val_seed, cfg.test_seed)
    if len(set(seeds)) < 4:
        raise ValueError(f"phantom seeds must differ (pretraining, labelled, validation, "
                         f"test: {seeds}): the same seed gives the same cases")
    prep = Preprocessing(input_size=cfg.input_size, modality="CT", ct_window=(40.0, 400.0))
    kw = {"variation": cfg.phantoms, "size": cfg.input_size}
    pool = ArrayDataset(*make_slices(cfg.n_labeled, cfg.labeled_seed, **kw), prep=prep)
    val = ArrayDataset(*make_slices(cfg.n_val, cfg.val_seed, **kw), prep=prep)
    test = ArrayDataset(*make_slices(cfg.n_test, cfg.test_seed, **kw), prep=prep)
    n_check = 16
    imgs, _ = make_slices(cfg.n_unlabeled + n_check, cfg.pretrain_seed, **kw)
    unl = ArrayDataset(imgs, None, prep=prep).images()
    names = [c["name"] for c in CLASSES]
    return StudyData("phantoms", pool, val, test, unl[:-n_check], unl[-n_check:], CLASSES, prep,
                     f"synthetic CT phantoms, variation {cfg.phantoms!r}, {cfg.input_size} px, "
                     f"classes {names}; phantom seeds pretraining/labelled/validation/test "
                     f"{'/'.join(map(str, seeds))}; {cfg.n_unlabeled} unlabelled, "
                     f"{cfg.n_labeled} labelled, {cfg.n_val} validation, {cfg.n_test} test")


def mni_data(cfg) -> StudyData:
    from training.data.mni152 import CLASSES, SOURCE, mni152_slices

    prep = Preprocessing(input_size=cfg.input_size, modality="MR")
    sets = {}
    for split in ("train", "val", "test"):
        img, lab = mni152_slices(split, block=cfg.mni_block, gap=cfg.mni_gap)
        sets[split] = ArrayDataset(img, lab, prep=prep, modality="MR",
                                   names=[f"mni152 {split} {i}" for i in range(len(img))])
    pool = sets["train"]
    unl = pool.images()  # the training block's images; their labels are not used
    # the check images: validation slices (never trained on by the MAE, never tested on)
    check = sets["val"].images()[:16]
    return StudyData("mni152", pool, sets["val"], sets["test"], unl, check, CLASSES, prep,
                     f"{SOURCE}; axial slices, blocks of {cfg.mni_block} with {cfg.mni_gap} "
                     f"dropped between, train/train/val/test: {len(pool)} train (labelled pool "
                     f"and the only unlabelled pretraining images), {len(sets['val'])} "
                     f"validation, {len(sets['test'])} test; {cfg.input_size} px")


def load_data(name: str, cfg) -> StudyData:
    if name == "phantoms":
        return phantom_data(cfg)
    if name == "mni152":
        return mni_data(cfg)
    raise ValueError(f"unknown dataset {name!r}; choose phantoms or mni152")
