"""Data and starting models of the simulated-user benchmark (:mod:`training.interactive.simulate`).

Per dataset: an unlabelled pool (MAE pretraining), a *small* labelled set (the starting
segmenter), a larger labelled pool (the full-supervision reference that sets the target Dice),
a validation set (model selection) and the held-out volumes the simulated user corrects. None of
them shares a case or a slice block with another:

* ``phantom``: synthetic CT phantoms (:mod:`training.data.synthetic`), pools from phantom
  seeds 1 (unlabelled), 2 (labelled), 3 (validation); the held-out volume of benchmark seed
  ``s`` is case ``900_000 + s`` rendered through z as one 3-D case with one pose, scale,
  elastic warp and contrast (the variation is fixed per case, as in a real patient).
* ``mni152``: the MNI152 T1 with grey/white-matter labels (:mod:`training.data.mni152`): the
  pools are its ``train`` blocks, validation its ``val`` blocks, the held-out volume its
  ``test`` blocks (gaps between blocks, so no test slice lies next to a training slice).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.preprocessing import Preprocessing

HELD_OUT_CASE = 900_000  # phantom case seeds of the held-out volumes (far from the pools)


@dataclass
class Dataset:
    name: str
    classes: list[dict]
    prep: Preprocessing
    modality: str
    window: tuple[float, float] | None
    unlabeled: np.ndarray  # (N, H, W) raw intensities
    small: tuple[np.ndarray, np.ndarray]  # the starting model's labelled set
    pool: tuple[np.ndarray, np.ndarray]  # the full-supervision reference's labelled set
    val: tuple[np.ndarray, np.ndarray]
    describe: str

    def volume(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out (image, labels) volume of benchmark seed ``seed``."""
        raise NotImplementedError


def phantom_volume(case_seed: int, n_slices: int, size: int, variation="hard",
                   z_range: tuple[float, float] = (-0.5, 0.6), noise_hu: float = 12.0,
                   blur_px: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """One phantom case as a (z, y, x) volume whose variation (pose, scale, elastic shape,
    contrast, noise, blur) is the same on every slice: (HU float32, labels uint8)."""
    from training.data.phantom_variation import as_variation, finish_slice, render_varied
    from training.data.synthetic import PhantomCase

    var = as_variation(variation)
    rng = np.random.default_rng([case_seed, 13])
    imgs, labs = [], []
    for z in np.linspace(*z_range, n_slices):
        case = PhantomCase(case_seed)  # fresh: render_varied shifts the organ HU in place
        if var.is_none():
            clean, lab = case.render(float(z), size)
            img = finish_slice(clean, rng, noise_hu, blur_px)
        else:
            img, lab = render_varied(case, float(z), size, var, case_seed, noise_hu, blur_px,
                                     rng)
        imgs.append(img)
        labs.append(lab)
    return np.stack(imgs).astype(np.float32), np.stack(labs).astype(np.uint8)


class PhantomData(Dataset):
    def __init__(self, input_size: int, n_unlabeled: int, n_small: int, n_pool: int,
                 n_val: int, volume_slices: int, volume_size: int, variation: str):
        from training.data.synthetic import CLASSES, CT_WINDOW, make_slices

        kw = {"variation": variation}
        pool = make_slices(n_pool, 2, input_size, **kw)
        super().__init__(
            name="phantom", classes=CLASSES,
            prep=Preprocessing(input_size=input_size, modality="CT", ct_window=CT_WINDOW),
            modality="CT", window=CT_WINDOW,
            unlabeled=make_slices(n_unlabeled, 1, input_size, **kw)[0],
            small=(pool[0][:n_small], pool[1][:n_small]), pool=pool,
            val=make_slices(n_val, 3, input_size, **kw),
            describe=(f"synthetic CT phantoms, variation {variation!r}: {n_unlabeled} "
                      f"unlabelled (seed 1), {n_small} labelled for the starting model "
                      f"(the first of the {n_pool}-slice reference pool, seed 2), {n_val} "
                      f"validation (seed 3); held-out volume of seed s: case "
                      f"{HELD_OUT_CASE}+s, {volume_slices} slices of {volume_size} px"))
        self.volume_slices, self.volume_size, self.variation = (volume_slices, volume_size,
                                                                variation)

    def volume(self, seed: int):
        return phantom_volume(HELD_OUT_CASE + seed, self.volume_slices, self.volume_size,
                              self.variation)


class MNIData(Dataset):
    def __init__(self, input_size: int, n_small: int):
        from training.data import mni152

        ti, tl = mni152.mni152_slices("train")
        small = np.linspace(0, len(ti) - 1, n_small).round().astype(int)
        self._test = mni152.mni152_slices("test")
        val = mni152.mni152_slices("val")
        super().__init__(
            name="mni152", classes=mni152.CLASSES,
            prep=Preprocessing(input_size=input_size, modality="MR"), modality="MR",
            window=None, unlabeled=ti, small=(ti[small], tl[small]), pool=(ti, tl),
            val=val,
            describe=(f"{mni152.SOURCE}; axial slices in blocks with gaps: the {len(ti)} "
                      f"'train' slices are the MAE's unlabelled pool and the reference's "
                      f"labelled pool, {n_small} of them spread evenly label the starting "
                      f"model; 'val' ({len(val[0])}) selects models; the held-out "
                      f"volume is the {len(self._test[0])} 'test' slices"))

    def volume(self, seed: int):
        return self._test


def load_data(name: str, cfg) -> Dataset:
    if name == "phantom":
        return PhantomData(cfg.input_size, cfg.n_unlabeled, cfg.n_small, cfg.n_pool, cfg.n_val,
                           cfg.volume_slices, cfg.volume_size, cfg.phantoms)
    if name == "mni152":
        return MNIData(cfg.input_size, cfg.n_small_mni)
    raise ValueError(f"unknown dataset {name!r}; choose from phantom, mni152")


def _unit(images: np.ndarray, prep: Preprocessing, modality: str):
    """(N, 1, S, S) float tensor in [0, 1], as the datasets give them."""
    from training.data.datasets import ArrayDataset
    return ArrayDataset(images, None, prep=prep, modality=modality).images()


def _fingerprint(cfg, ds: Dataset, start: str) -> str:
    import hashlib
    return hashlib.sha256(f"{cfg.key()}|{ds.name}|{start}".encode()).hexdigest()[:12]


def pretrain_mae(ds: Dataset, cfg, arch, path: Path, progress: bool) -> dict:
    """The issue-14 pretraining recipe (as the label-efficiency study's): per-sample
    augmentation (:class:`training.data.augment.PretrainAugment`), 8-px mask units, per-patch
    normalised targets; ``pretrain_quick``'s loop. Records the input-use check."""
    import torch

    from training.data.augment import PretrainAugment
    from training.finetune.label_efficiency import pretrain_quick
    from training.finetune.label_efficiency.pretraining import check_model
    from training.models import build_model
    from training.models.input_check import describe_check
    from training.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    mae = build_model("mae", arch.replace(mask_unit=8, norm_pix_loss=True))
    unit, aug = _unit(ds.unlabeled, ds.prep, ds.modality), PretrainAugment()
    t0 = time.perf_counter()
    losses = pretrain_quick(mae, unit, cfg.pretrain_steps, ds.prep, cfg.pretrain_batch,
                            1.5e-3, device=cfg.device, progress=progress, augment=aug)
    mae.cpu().eval()
    check = check_model(mae, _unit(ds.val[0], ds.prep, ds.modality), unit, ds.prep)
    meta = {"steps": cfg.pretrain_steps, "images": len(ds.unlabeled),
            "augment": aug.to_dict(), "mask_unit": 8, "norm_pix_loss": True,
            "loss_first_50": float(np.mean(losses[:50])),
            "loss_last_50": float(np.mean(losses[-50:])),
            "input_use_check": describe_check(check),
            "seconds": round(time.perf_counter() - t0, 1)}
    save_checkpoint(mae, path, name=f"{ds.name} MAE (simulated-user benchmark)",
                    preprocessing=ds.prep.to_dict(), overwrite=True,
                    provenance={"simulate_key": _fingerprint(cfg, ds, "mae-pretrained"),
                                "simulate": meta})
    if progress:
        print(f"{ds.name} MAE: {meta['input_use_check']}", file=sys.stderr, flush=True)
    return meta


def prepare_models(ds: Dataset, cfg, folder: Path, progress: bool = True) -> tuple[dict, dict]:
    """The MAE (if a start needs it), the starting segmenters ``mae``/``random`` and the
    ``reference`` (random init, the whole labelled pool) in ``folder``; kept ones are reused.
    -> ({start: {validation Dice, seconds, ...}}, the recipe in use)."""
    import torch

    from training.data.datasets import ArrayDataset
    from training.finetune.engine import FinetuneConfig, build_finetune_model, finetune_steps
    from training.finetune.recipe import resolve
    from training.models.config import get_config
    from training.weights.checkpoint import read_model_card, save_checkpoint

    info: dict = {}
    recipe = recipe_info()
    nc, names = len(ds.classes), [c["name"] for c in ds.classes]

    def fresh(path: Path, start: str) -> bool:
        try:
            card = read_model_card(path)
        except (FileNotFoundError, OSError, ValueError):
            return False
        if card.provenance.get("simulate_key") != _fingerprint(cfg, ds, start):
            return False
        info[start] = card.provenance.get("simulate", {})
        return True

    arch = get_config(cfg.preset, img_size=cfg.input_size)
    mae_dir = folder / "mae-pretrained"
    if "mae" in cfg.starts and not fresh(mae_dir, "mae-pretrained"):
        info["mae-pretrained"] = pretrain_mae(ds, cfg, arch, mae_dir, progress)
    val = ArrayDataset(*ds.val, prep=ds.prep, modality=ds.modality, window=ds.window)
    for start in [*cfg.starts, "reference"]:
        path = folder / start
        if fresh(path, start):
            continue
        images, masks = ds.pool if start == "reference" else ds.small
        train = ArrayDataset(images, masks, prep=ds.prep, modality=ds.modality, window=ds.window)
        evals = 4
        fcfg = resolve(FinetuneConfig(task="segmentation", num_classes=nc, epochs=evals,
                                      steps_per_epoch=max(1, cfg.start_steps // evals),
                                      batch_size=cfg.start_batch, lr=cfg.start_lr,
                                      warmup_epochs=0.5, seed=0, device=cfg.device),
                       pretrained=start == "mae")
        torch.manual_seed(0)
        model, _, _, parent = build_finetune_model(
            "segmentation", nc, str(mae_dir) if start == "mae" else None, arch,
            encoder_only=fcfg.transfer == "encoder", rescale=fcfg.rescale)
        t0, best, best_dice = time.perf_counter(), None, None
        for ev in finetune_steps(model, train, val, fcfg, class_names=names):
            if ev["kind"] == "epoch" and ev.get("is_best"):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best_dice = ev.get("val_dice")
        if best is not None:
            model.load_state_dict(best)
        meta = {"init": parent, "recipe": {k: getattr(fcfg, k) for k in (
                    "transfer", "rescale", "layer_decay", "freeze_encoder_steps")},
                "labelled_slices": len(train), "steps": cfg.start_steps,
                "batch": cfg.start_batch, "lr": cfg.start_lr, "val_dice": best_dice,
                "seconds": round(time.perf_counter() - t0, 1)}
        save_checkpoint(model.cpu(), path, name=f"{ds.name} {start} start",
                        classes=ds.classes, preprocessing=ds.prep.to_dict(), overwrite=True,
                        provenance={"simulate_key": _fingerprint(cfg, ds, start),
                                    "simulate": meta})
        info[start] = meta
        if progress:
            print(f"{ds.name} {start}: {len(train)} labelled slices, validation Dice "
                  f"{best_dice}", file=sys.stderr, flush=True)
    return info, recipe


def recipe_info() -> dict:
    """The fine-tune recipe of pretrained and random inits when this runs (for the results)."""
    from training.finetune import recipe
    return {"pretrained_default": recipe.PRETRAINED_DEFAULT.to_dict(),
            "random": dict(recipe.NEUTRAL), "paper": recipe.PAPER.to_dict()}
