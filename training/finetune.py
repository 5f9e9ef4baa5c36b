"""Fine-tune VIS-MAE for segmentation or classification (headless, and the napari plugin's engine).

    python -m training.finetune --task segmentation --init mae_ckpt/ --csv-dir csvs --fold 1 \\
        --num-classes 5 --out runs/seg
    python -m training.finetune --task segmentation --synthetic 200 --preset tiny --out runs/demo

Three layers:

* :func:`finetune_steps` is a generator: it trains ``model`` in place and
  yields ``{'kind': 'step', ...}`` after every optimizer step and
  ``{'kind': 'epoch', ...}`` after every epoch (with validation metrics and
  ``is_best``); it ends with ``{'kind': 'done'}``, or ``{'kind': 'stopped'}``
  as soon as ``stop_event.is_set()`` (a :class:`threading.Event`), leaving the
  model as trained so far. The GUI drives it from a worker thread.
* :func:`finetune` consumes it: tqdm progress, a JSON-lines log, atomic
  ``last``/``best`` checkpoints (our format, with class names and colours in
  the model card) and ``train_state.pt`` for ``--resume``.
* :func:`main` is the CLI.

Recipe (official code unless noted): AdamW (betas 0.9/0.95, wd 0.05, no decay
on norms/biases: ours), per-step linear warm-up + cosine, segmentation loss
0.4·CE + 0.6·Dice (:mod:`training.losses`), classification CE, best
checkpoint by validation Dice (segmentation) or validation loss
(classification). Preprocessing comes from the initialising checkpoint's
model card, so it is identical to pretraining and inference.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .augment import AugmentConfig, augment_batch
from .datasets import ArrayDataset, CSVDataset, DataError, SliceDataset, VolumeFolderDataset
from .losses import DiceCELoss
from .optim import WarmupCosine, build_optimizer
from .preprocessing import Preprocessing, to_model_input

MODES = ("full", "decoder", "head")
STATE_NAME = "train_state.pt"
LOG_NAME = "log.jsonl"


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run (stored in the model card's provenance)."""

    task: str = "segmentation"  # "segmentation" | "classification"
    num_classes: int = 2  # segmentation: labels + 1 (background)
    mode: str = "full"  # "full" | "decoder" (frozen encoder) | "head"
    epochs: int = 50
    steps_per_epoch: int | None = None  # None: one pass over the data; else fixed (with recycling)
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    augment: bool = True
    ce_weight: float = 0.4
    dice_weight: float = 0.6
    dice_denominator: str = "foreground"  # "all" reproduces the official /C scaling
    grad_clip: float | None = None
    seed: int = 0
    device: str = "cpu"
    val_every: int = 1  # validate every N epochs (and always after the last)
    eval_batch_size: int = 16
    log_every: int = 10  # steps between log lines (finetune wrapper)

    def __post_init__(self):
        if self.task not in ("segmentation", "classification"):
            raise ValueError(f"task must be 'segmentation' or 'classification', got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "decoder" and self.task == "classification":
            raise ValueError("mode 'decoder' needs a decoder (segmentation); for classification "
                             "use 'head' (linear probe) or 'full'")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainState:
    """Where a run is; saved after every epoch so that ``--resume`` continues exactly."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    best_score: float | None = None
    best_epoch: int = -1
    history: list = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object | None = None
    _pending: dict | None = None  # optimizer/scheduler states to restore

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_score": self.best_score,
                "best_epoch": self.best_epoch, "history": self.history,
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        s = cls(d["epoch"], d["step"], d["best_score"], d["best_epoch"], list(d["history"]))
        s._pending = {"optimizer": d.get("optimizer"), "scheduler": d.get("scheduler")}
        return s


# -- model ---------------------------------------------------------------------------------------
def trainable_prefixes(model: nn.Module, mode: str) -> tuple[str, ...] | None:
    """Parameter-name prefixes trained in ``mode`` (None: everything)."""
    from .models import task_of

    task = task_of(model)
    if mode == "full":
        return None
    if mode == "decoder":
        if task != "segmentation":
            raise ValueError("mode 'decoder' applies to segmentation models only")
        return ("first_patch_expanding", "layers_up", "skip_connection_layers", "norm_up",
                "final_patch_expanding", "head")
    if mode == "head":
        return ("final_patch_expanding", "head") if task == "segmentation" else ("norm", "head")
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def configure_trainable(model: nn.Module, mode: str) -> list[str]:
    """Freeze everything outside ``mode``'s prefixes; returns the trainable parameter names."""
    prefixes = trainable_prefixes(model, mode)
    names = []
    for n, p in model.named_parameters():
        p.requires_grad_(prefixes is None or n.split(".")[0] in prefixes)
        if p.requires_grad:
            names.append(n)
    return names


def set_train_mode(model: nn.Module, mode: str) -> None:
    """``model.train()``, with frozen top-level modules in eval mode (no drop-path noise)."""
    model.train()
    prefixes = trainable_prefixes(model, mode)
    if prefixes is not None:
        for name, child in model.named_children():
            if name not in prefixes:
                child.eval()


def make_loss(cfg: FinetuneConfig) -> nn.Module:
    if cfg.task == "segmentation":
        return DiceCELoss(cfg.ce_weight, cfg.dice_weight, cfg.dice_denominator)
    return nn.CrossEntropyLoss()


def build_finetune_model(task: str, num_classes: int, init: str | None = None,
                         preset: str = "vismae", encoder_only: bool = False):
    """-> (model, LoadReport or None, Preprocessing or None, parent description).

    ``init``: None/'random' (random initialisation, the baseline), one of our
    checkpoint directories (MAE or fine-tuned) or an official ``.pth``. The
    architecture comes from the checkpoint; ``preset`` only for random init.
    The returned preprocessing is the parent's (None for random init).
    """
    from .checkpoint import CARD_NAME, init_from_checkpoint, read_model_card
    from .models import build_model
    from .official import infer_architecture, read_state_dict
    from .preprocessing import OFFICIAL_PRETRAIN

    if init in (None, "", "random", "none"):
        return build_model(task, preset, num_classes=num_classes), None, None, "random init"
    path = Path(init)
    if (path / CARD_NAME).is_file() or (path.parent / CARD_NAME).is_file():
        card = read_model_card(path)
        model = build_model(task, card.config, num_classes=num_classes)
        report = init_from_checkpoint(model, path, encoder_only=encoder_only)
        return model, report, card.prep, f"{card.name} ({card.task}, {path})"
    state, name = read_state_dict(path)
    _, cfg, _ = infer_architecture(state, name)
    model = build_model(task, cfg, num_classes=num_classes)
    report = init_from_checkpoint(model, state, encoder_only=encoder_only)
    report.source = name
    return model, report, OFFICIAL_PRETRAIN, f"official VIS-MAE checkpoint {path.name}"


# -- the loop ------------------------------------------------------------------------------------
def epoch_order(n: int, samples: int | None, generator: torch.Generator) -> list[int]:
    """Shuffled indices for one epoch; with ``samples``, whole permutations are chained."""
    if samples is None:
        return torch.randperm(n, generator=generator).tolist()
    out: list[int] = []
    while len(out) < samples:
        out += torch.randperm(n, generator=generator).tolist()
    return out[:samples]


def _collate(dataset: SliceDataset, idx: Sequence[int]):
    items = [dataset[i] for i in idx]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


def finetune_steps(model: nn.Module, train_data: SliceDataset, val_data: SliceDataset | None,
                   cfg: FinetuneConfig, stop_event=None, state: TrainState | None = None,
                   class_names: Sequence[str] | None = None) -> Iterator[dict]:
    """Fine-tune ``model`` in place, yielding progress dicts (see the module docstring).

    ``state`` (optional) is updated in place and holds the optimizer and
    scheduler, so a caller can checkpoint it; pass a restored one to resume.
    Data items must be ``(image [0, 1] (1, S, S), target)`` as produced by
    :mod:`training.datasets`; standardisation uses ``train_data.prep``.
    Raises :class:`DataError` for empty or out-of-range data and
    :class:`FloatingPointError` if the loss diverges (never trains on NaNs).
    """
    from .evaluate import predict_and_score
    from .models import task_of

    if task_of(model) != cfg.task:
        raise ValueError(f"the model is a {task_of(model)} model but the config says {cfg.task}")
    if model.num_classes != cfg.num_classes:
        raise ValueError(f"the model has {model.num_classes} classes, the config "
                         f"{cfg.num_classes}")
    train_data.validate(cfg.num_classes, "training set")
    if val_data is not None:
        if len(val_data) == 0:
            val_data = None
            warnings.warn("empty validation set: selecting the best epoch by training loss",
                          stacklevel=2)
        else:
            val_data.validate(cfg.num_classes, "validation set")
    device = torch.device(cfg.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal weights can slow CPU training 10x
    state = state if state is not None else TrainState()
    prep: Preprocessing = train_data.prep
    model.to(device)
    trainable = configure_trainable(model, cfg.mode)
    if not trainable:
        raise ValueError(f"mode {cfg.mode!r} leaves nothing to train")
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    n = len(train_data)
    spe = cfg.steps_per_epoch or math.ceil(n / cfg.batch_size)
    total = cfg.epochs * spe
    scheduler = WarmupCosine(optimizer, total, round(cfg.warmup_epochs * spe),
                             min_lr_ratio=cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0)
    if state._pending:
        if state._pending.get("optimizer"):
            optimizer.load_state_dict(state._pending["optimizer"])
        if state._pending.get("scheduler"):
            scheduler.load_state_dict(state._pending["scheduler"])
        state._pending = None
    state.optimizer, state.scheduler = optimizer, scheduler
    loss_fn = make_loss(cfg)
    aug_cfg = AugmentConfig()
    seg = cfg.task == "segmentation"
    base = {"total_steps": total, "steps_per_epoch": spe, "epochs": cfg.epochs}

    for epoch in range(state.epoch, cfg.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        g_aug = torch.Generator(device).manual_seed(cfg.seed * 100_003 + epoch + 50_000)
        order = epoch_order(n, spe * cfg.batch_size if cfg.steps_per_epoch else None, g)
        set_train_mode(model, cfg.mode)
        t0, losses = time.perf_counter(), []
        for b in range(spe):
            if stop_event is not None and stop_event.is_set():
                yield {"kind": "stopped", "epoch": epoch, "step": state.step, **base}
                return
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if not idx:
                break
            x, y = _collate(train_data, idx)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.augment:
                x, ym = augment_batch(x, y if seg else None, aug_cfg, g_aug)
                y = ym if seg else y
            logits = model(to_model_input(x, prep))
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {state.step} "
                                         f"(epoch {epoch}); lower the learning rate (now "
                                         f"{optimizer.param_groups[0]['lr']:.2e})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                         cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            state.step += 1
            losses.append(loss.item())
            yield {"kind": "step", "epoch": epoch, "step": state.step, "loss": losses[-1],
                   "lr": lr, **base}
        ev = {"kind": "epoch", "epoch": epoch, "step": state.step,
              "train_loss": float(np.mean(losses)) if losses else None,
              "epoch_seconds": time.perf_counter() - t0, **base}
        last = epoch == cfg.epochs - 1
        if val_data is not None and ((epoch + 1) % cfg.val_every == 0 or last):
            res = predict_and_score(model, val_data, cfg.task, prep, cfg.eval_batch_size, device,
                                    loss_fn, class_names)
            ev["val_loss"] = res["loss"]
            if seg:
                ev["val_dice"] = res["mean_dice"]
                ev["val_dice_pooled"] = res["mean_dice_pooled"]
                ev["val_dice_per_class"] = [c["dice"] for c in res["per_class"]]
                score = res["mean_dice"]
            else:
                ev["val_auc"], ev["val_pr_auc"] = res["roc_auc"], res["pr_auc"]
                ev["val_accuracy"] = res["accuracy"]
                score = -res["loss"]
            ev["selection"] = "val_dice" if seg else "val_loss"
        elif val_data is None and ev["train_loss"] is not None:
            score, ev["selection"] = -ev["train_loss"], "train_loss"
        else:
            score = None
        ev["is_best"] = score is not None and (state.best_score is None or score > state.best_score)
        if ev["is_best"]:
            state.best_score, state.best_epoch = float(score), epoch
        ev["best_epoch"], ev["best_score"] = state.best_epoch, state.best_score
        state.epoch = epoch + 1
        state.history.append({k: v for k, v in ev.items() if k != "kind"})
        yield ev
    model.eval()
    yield {"kind": "done", "epoch": state.epoch, "step": state.step,
           "best_epoch": state.best_epoch, "best_score": state.best_score, **base}


# -- wrapper: progress, log, checkpoints, resume ------------------------------------------------
def finetune(model: nn.Module, train_data: SliceDataset, val_data: SliceDataset | None,
             cfg: FinetuneConfig, out_dir: str | os.PathLike | None, *, name: str = "",
             classes: list[dict] | None = None, parent: str = "random init",
             transfer: dict | None = None, resume: bool = False, progress: bool = True,
             stop_event=None, description: str = "") -> dict:
    """Run :func:`finetune_steps` with a tqdm bar, ``log.jsonl``, and atomic checkpoints
    ``out_dir/last`` (every epoch), ``out_dir/best`` and ``out_dir/train_state.pt``.

    ``resume`` continues from ``last`` + ``train_state.pt`` (epoch boundaries:
    a run stopped mid-epoch redoes that epoch). Returns a summary dict (also
    ``summary.json``). With ``out_dir=None`` nothing is written (the model is
    trained in place).
    """
    from tqdm.auto import tqdm

    from .checkpoint import load_checkpoint, save_checkpoint

    out = Path(out_dir) if out_dir is not None else None
    state = TrainState()
    if out is not None:
        if resume and (out / STATE_NAME).is_file() and (out / "last").is_dir():
            last, _ = load_checkpoint(out / "last")
            model.load_state_dict(last.state_dict())
            saved = torch.load(out / STATE_NAME, map_location="cpu", weights_only=True)
            if saved.get("config", {}).get("task") not in (None, cfg.task):
                raise ValueError(f"{out}: cannot resume a {saved['config']['task']} run as "
                                 f"{cfg.task}")
            state = TrainState.from_dict(saved)
        elif (out / "last").exists() and not resume:
            raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) or "
                                  "choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
    classes = classes or _default_classes(cfg)
    names = [c["name"] for c in sorted(classes, key=lambda c: c["index"])]
    if len(names) != cfg.num_classes:
        raise ValueError(f"{len(names)} class names for {cfg.num_classes} classes")
    data_info = {"train_images": len(train_data), "val_images": len(val_data) if val_data else 0}
    log = open(out / LOG_NAME, "a") if out is not None else None

    def write_log(rec):
        if log is not None:
            log.write(json.dumps({"time": round(time.time(), 3), **rec}) + "\n")
            log.flush()

    def save(kind: str, metrics: dict):
        prov = {"parent": parent, "transfer": transfer, "finetune": cfg.to_dict(),
                "data": data_info, "metrics": metrics, "epoch": state.epoch, "step": state.step}
        save_checkpoint(model, out / kind, name=name or f"{cfg.task} ({kind})",
                        classes=classes, preprocessing=train_data.prep.to_dict(),
                        provenance=prov, description=description, overwrite=True)

    write_log({"kind": "start", "config": cfg.to_dict(), "parent": parent, "resume_epoch":
               state.epoch, **data_info})
    bar = tqdm(total=cfg.epochs * (cfg.steps_per_epoch or
                                   math.ceil(len(train_data) / cfg.batch_size)),
               initial=state.step, disable=not progress, desc=f"fine-tune {cfg.task}",
               dynamic_ncols=True)
    last_ev: dict = {}
    try:
        for ev in finetune_steps(model, train_data, val_data, cfg, stop_event, state, names):
            last_ev = ev
            if ev["kind"] == "step":
                bar.update(1)
                bar.set_postfix(loss=f"{ev['loss']:.4f}", lr=f"{ev['lr']:.1e}", refresh=False)
                if ev["step"] % cfg.log_every == 0:
                    write_log(ev)
            elif ev["kind"] == "epoch":
                write_log(ev)
                if "val_dice" in ev:
                    bar.set_postfix(val_dice=f"{ev['val_dice']:.4f}", refresh=False)
                elif "val_loss" in ev:
                    bar.set_postfix(val_loss=f"{ev['val_loss']:.4f}", refresh=False)
                if out is not None:
                    metrics = {k: v for k, v in ev.items() if k.startswith(("val_", "train_"))}
                    if ev["is_best"]:
                        save("best", metrics)
                    save("last", metrics)
                    with atomic_path(out / STATE_NAME) as tmp:
                        torch.save({**state.to_dict(), "config": cfg.to_dict()}, tmp)
            else:
                write_log(ev)
    finally:
        bar.close()
        if log is not None:
            log.close()
    summary = {"status": last_ev.get("kind", "empty"), "epochs": state.epoch, "steps": state.step,
               "best_epoch": state.best_epoch, "best_score": state.best_score,
               "selection": state.history[-1].get("selection") if state.history else None,
               "history": state.history}
    if out is not None:
        from .atomic import atomic_write_text
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _default_classes(cfg: FinetuneConfig) -> list[dict]:
    from .model_card import default_classes
    return default_classes(cfg.num_classes, cfg.task)


def make_classes(names: Sequence[str] | None, num_classes: int, task: str,
                 colors: Sequence[str] | None = None) -> list[dict]:
    """``[{index, name, color}]`` for the model card (defaults fill what is not given)."""
    from .model_card import default_classes
    out = default_classes(num_classes, task)
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        for c, n in zip(out, names):
            c["name"] = n
    if colors:
        if len(colors) != num_classes:
            raise ValueError(f"{len(colors)} colours for {num_classes} classes")
        for c, col in zip(out, colors):
            c["color"] = col
    return out


# -- CLI plumbing (shared with training.evaluate) -----------------------------------------------
def add_data_args(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    g = p.add_argument_group("data (pick one source; the validation set is optional)")
    g.add_argument("--csv-dir", help="folder with the official CSVs train_fold{N}.csv, "
                   "val_fold{N}.csv, test_fold{N}.csv (columns image,mask or image,label)")
    g.add_argument("--fold", type=int, default=1, help="fold number N for --csv-dir")
    g.add_argument("--percent", type=int, help="use {percent}_train_fold{N}.csv (the official "
                                               "label-fraction files)")
    g.add_argument("--train-csv", help="CSV of training images (image,mask or image,label)")
    g.add_argument("--val-csv", help="CSV of validation images")
    g.add_argument("--test-csv", help="CSV of test images (evaluation)")
    g.add_argument("--images", help="folder of image volumes (NIfTI files or DICOM series "
                   "folders), sliced along z; training data, or test data for evaluate")
    g.add_argument("--labels", help="folder of label volumes named like the images "
                                    "(case1.nii.gz <-> case1.nii.gz or DICOM folder case1/)")
    g.add_argument("--val-images", help="folder of validation volumes")
    g.add_argument("--val-labels", help="folder of validation label volumes")
    g.add_argument("--skip-empty", action="store_true",
                   help="drop volume slices without foreground")
    g.add_argument("--synthetic", type=int, metavar="N",
                   help="use N synthetic CT phantoms (training.synthetic) instead of files: "
                        "segmentation of liver/spleen/kidney/bone, or lesion classification")
    g.add_argument("--synthetic-size", type=int, default=64, help="side of synthetic slices")
    g.add_argument("--synthetic-seed", type=int, default=0,
                   help="seed of the synthetic data (test data uses another seed)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="if no validation data is given, hold out this fraction of the "
                        "training volumes/patients (0 disables validation)")
    g = p.add_argument_group("preprocessing (defaults: the initialising checkpoint's model card)")
    g.add_argument("--input-size", type=int, help="model input side (a multiple of 32)")
    g.add_argument("--modality", help="modality of files without a header (NIfTI, PNG): "
                                      "'CT' applies the HU window")
    g.add_argument("--ct-window", type=float, nargs=2, metavar=("CENTER", "WIDTH"),
                   help="CT window in HU, when the DICOM header has none")
    g.add_argument("--mean", type=float, help="standardisation mean after 0-1 scaling")
    g.add_argument("--std", type=float, help="standardisation std after 0-1 scaling")


def add_train_args(p: argparse.ArgumentParser, for_cv: bool = False) -> None:
    d = FinetuneConfig()
    g = p.add_argument_group("model" + (" (with --cv)" if for_cv else ""))
    g.add_argument("--task", choices=("segmentation", "classification"),
                   default=None if for_cv else "segmentation", help="what to fine-tune for")
    g.add_argument("--init", default="random",
                   help="initial weights: an MAE checkpoint directory (ours), an official VIS-MAE "
                        ".pth, or 'random' (the random-init baseline)")
    g.add_argument("--encoder-only", action="store_true",
                   help="transfer only the encoder (keep the decoder random); default: encoder "
                        "and decoder, as the official code")
    g.add_argument("--preset", default="vismae", help="architecture for --init random "
                   "(vismae, vismae_official_seg, small, tiny)")
    g.add_argument("--num-classes", type=int, help="number of classes; segmentation: labels + 1 "
                   "(background). Default: from the class names or the data")
    g.add_argument("--class-names", nargs="+", help="class names in index order (segmentation: "
                   "background first)")
    g.add_argument("--class-colors", nargs="+", help="class colours (#RRGGBB[AA]) in index order")
    g = p.add_argument_group("training" + (" (with --cv)" if for_cv else ""))
    g.add_argument("--mode", choices=MODES, default=d.mode,
                   help="full: train everything; decoder: freeze patch embedding and encoder "
                        "(incl. bottleneck), train decoder, skips and head; head: train only the "
                        "final layer (segmentation: final patch expanding + 1x1 head; "
                        "classification: norm + linear head)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--steps-per-epoch", type=int, help="fixed steps per epoch (small datasets "
                   "are recycled); default: one pass over the data")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (absolute)")
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="final learning rate")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g.add_argument("--no-augment", action="store_true",
                   help="disable rot90/flip, small affine and intensity jitter")
    g.add_argument("--ce-weight", type=float, default=d.ce_weight,
                   help="segmentation loss: weight of cross-entropy (official 0.4)")
    g.add_argument("--dice-weight", type=float, default=d.dice_weight,
                   help="segmentation loss: weight of soft Dice (official 0.6)")
    g.add_argument("--dice-denominator", choices=("foreground", "all"), default=d.dice_denominator,
                   help="average the Dice loss over foreground classes, or divide by all C "
                        "classes like the official code")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm")
    g.add_argument("--val-every", type=int, default=d.val_every, help="validate every N epochs")
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    if not for_cv:
        g.add_argument("--out", required=True, help="output folder: best/ and last/ checkpoints, "
                       "log.jsonl, train_state.pt, summary.json")
        g.add_argument("--name", help="model name for the model card")
        g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def setup_runtime(args=None) -> None:
    """Flush denormals (the shifted-window mask's exp(-100) underflows to denormal floats,
    which slow CPU kernels up to 10x; set before torch starts its thread pool) and threads."""
    torch.set_flush_denormal(True)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def prep_from_args(args, base: Preprocessing | None) -> Preprocessing:
    """The model card's preprocessing (or the default), with command-line overrides."""
    prep = base or Preprocessing()
    changes = {}
    if args.input_size:
        changes["input_size"] = args.input_size
    if args.modality:
        changes["modality"] = args.modality
    if args.ct_window:
        changes["ct_window"] = tuple(args.ct_window)
    if args.mean is not None:
        changes["mean"] = args.mean
    if args.std is not None:
        changes["std"] = args.std
    if getattr(args, "synthetic", None) and not args.modality:
        changes["modality"] = "CT"
    return dataclasses.replace(prep, **changes) if changes else prep


def class_info(args, task: str, num_classes: int | None):
    """-> (class names or None, colours or None) from the arguments (synthetic data: its classes)."""
    names, colors = getattr(args, "class_names", None), getattr(args, "class_colors", None)
    if getattr(args, "synthetic", None) and not names:
        from .synthetic import CLASSES, CLS_CLASSES
        src = CLASSES if task == "segmentation" else CLS_CLASSES
        names, colors = [c["name"] for c in src], colors or [c["color"] for c in src]
    return names, colors


def datasets_from_args(args, task: str, prep: Preprocessing, num_classes: int | None,
                       purpose: str = "train") -> dict[str, SliceDataset]:
    """{'train', 'val'} (purpose train/cv) or {'test'} (purpose evaluate) datasets."""
    from .datasets import fold_csv_paths
    from .splits import holdout_split

    names = getattr(args, "class_names", None)
    sources = sum(bool(x) for x in (args.csv_dir, args.train_csv or args.test_csv, args.images,
                                    args.synthetic))
    if sources != 1:
        raise DataError("give exactly one data source: --csv-dir, --train-csv/--test-csv, "
                        "--images (+ --labels) or --synthetic")
    out: dict[str, SliceDataset] = {}
    if args.synthetic:
        from .synthetic import make_classification_set, make_slices
        n, s, seed = args.synthetic, args.synthetic_size, args.synthetic_seed
        make = (lambda k, sd: make_slices(k, sd, s)) if task == "segmentation" else \
            (lambda k, sd: make_classification_set(k, sd, s))
        if purpose == "evaluate":
            out["test"] = ArrayDataset(*make(n, seed + 9999), task=task, prep=prep)
        else:
            out["train"] = ArrayDataset(*make(n, seed), task=task, prep=prep)
            if purpose == "train" and args.val_fraction > 0:
                out["val"] = ArrayDataset(*make(max(2, round(n * args.val_fraction)),
                                                seed + 5000), task=task, prep=prep)
        return out
    if args.csv_dir:
        paths = fold_csv_paths(args.csv_dir, args.fold, args.percent)
        if purpose == "evaluate":
            if "test" not in paths:
                raise DataError(f"no test_fold{args.fold}.csv in {args.csv_dir}")
            return {"test": CSVDataset(paths["test"], task, prep, names, args.modality)}
        out["train"] = CSVDataset(paths["train"], task, prep, names, args.modality)
        if "val" in paths and purpose == "train":
            out["val"] = CSVDataset(paths["val"], task, prep, names, args.modality)
    elif args.train_csv or args.test_csv:
        if purpose == "evaluate":
            if not args.test_csv:
                raise DataError("evaluate needs --test-csv")
            return {"test": CSVDataset(args.test_csv, task, prep, names, args.modality)}
        if not args.train_csv:
            raise DataError("training needs --train-csv")
        out["train"] = CSVDataset(args.train_csv, task, prep, names, args.modality)
        if args.val_csv:
            out["val"] = CSVDataset(args.val_csv, task, prep, names, args.modality)
    else:
        if not args.labels:
            raise DataError("--images needs --labels (label volumes)")
        window = tuple(args.ct_window) if args.ct_window else None
        ds = VolumeFolderDataset(args.images, args.labels, task, prep, args.modality, window,
                                 args.skip_empty)
        if purpose == "evaluate":
            return {"test": ds}
        out["train"] = ds
        if args.val_images:
            out["val"] = VolumeFolderDataset(args.val_images, args.val_labels, task, prep,
                                             args.modality, window, args.skip_empty)
    if purpose == "train" and "val" not in out and args.val_fraction > 0:
        tr = out["train"]
        keep, val = holdout_split(len(tr), args.val_fraction, args.seed, tr.groups())
        out["train"], out["val"] = tr.subset(keep), tr.subset(val)
        print(f"validation: holding out {len(val)} of {len(tr)} images "
              f"(--val-fraction {args.val_fraction})", file=sys.stderr)
    return out


def infer_num_classes(args, task: str) -> int:
    if args.num_classes:
        return args.num_classes
    names, _ = class_info(args, task, None)
    if names:
        return len(names)
    if task == "classification":
        return 2
    raise DataError("give --num-classes (segmentation: number of labels + 1 for background) "
                    "or --class-names")


def train_config_from_args(args) -> FinetuneConfig:
    if args.task is None:
        raise DataError("give --task segmentation|classification")
    return FinetuneConfig(
        task=args.task, num_classes=infer_num_classes(args, args.task), mode=args.mode,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, augment=not args.no_augment, ce_weight=args.ce_weight,
        dice_weight=args.dice_weight, dice_denominator=args.dice_denominator,
        grad_clip=args.grad_clip, seed=args.seed, device=args.device, val_every=args.val_every)


def make_model_factory(args, cfg: FinetuneConfig):
    """-> (factory() -> (model, finetune-kwargs), preprocessing) for the CLI and CV."""
    _, _, parent_prep, _ = build_finetune_model(cfg.task, cfg.num_classes, args.init,
                                                args.preset, args.encoder_only)
    prep = prep_from_args(args, parent_prep)
    names, colors = class_info(args, cfg.task, cfg.num_classes)
    classes = make_classes(names, cfg.num_classes, cfg.task, colors)

    def factory():
        torch.manual_seed(cfg.seed)
        model, report, _, parent = build_finetune_model(cfg.task, cfg.num_classes, args.init,
                                                         args.preset, args.encoder_only)
        return model, {"classes": classes, "parent": parent,
                       "transfer": report.to_dict() if report else None,
                       "progress": not args.no_progress}

    return factory, prep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.finetune",
        description="Fine-tune a VIS-MAE model for segmentation (0.4*CE + 0.6*Dice) or "
                    "classification (CE), from an MAE checkpoint (ours or official) or from "
                    "random init. Writes our checkpoint format (best/ by validation Dice or "
                    "loss, last/ every epoch) with class names and colours in the model card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Example: python -m training.finetune --task segmentation --synthetic 200 "
               "--preset tiny --input-size 64 --epochs 10 --out runs/demo")
    add_train_args(p)
    add_data_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_runtime(args)
    try:
        cfg = train_config_from_args(args)
        factory, prep = make_model_factory(args, cfg)
        torch.manual_seed(cfg.seed)
        model, meta = factory()
        if meta["transfer"]:
            t = meta["transfer"]
            print(f"init from {t['source']}: loaded {t['loaded']} tensors, newly initialised "
                  f"{len(t['new'])}, ignored {len(t['ignored'])}, shape-mismatched "
                  f"{len(t['mismatched'])}", file=sys.stderr)
        else:
            print(f"random init ({args.preset})", file=sys.stderr)
        data = datasets_from_args(args, cfg.task, prep, cfg.num_classes, purpose="train")
        summary = finetune(model, data["train"], data.get("val"), cfg, args.out,
                           name=args.name or Path(args.out).name, resume=args.resume, **meta)
    except (DataError, ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; resume with --resume --out {args.out}", file=sys.stderr)
        return 130
    best = summary["best_score"]
    sel = summary["selection"] or ""
    shown = best if sel == "val_dice" or best is None else -best
    print(f"done: {summary['steps']} steps, best epoch {summary['best_epoch']} "
          f"({sel} {shown if shown is None else round(shown, 4)}); checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
