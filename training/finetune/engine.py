"""The fine-tuning engine, headless and behind the napari plugin: the step generator and
predict-and-score.

* :func:`finetune_steps` is a generator: it trains ``model`` in place and
  yields ``{'kind': 'step', ...}`` after every optimizer step and
  ``{'kind': 'epoch', ...}`` after every epoch (with validation metrics and
  ``is_best``); it ends with ``{'kind': 'done'}``, or ``{'kind': 'stopped'}``
  as soon as ``stop_event.is_set()`` (a :class:`threading.Event`), leaving the
  model as trained so far. The GUI drives it from a worker thread.
* :func:`training.finetune.runner.finetune` consumes it: progress, a JSON-lines log, atomic
  ``last``/``best`` checkpoints (our format, with class names and colours in the model card)
  and ``train_state.pt`` for ``--resume``.
* :mod:`training.finetune.cli` is ``python -m training.finetune``.

Recipe (official code unless noted): AdamW (betas 0.9/0.95, wd 0.05, no decay
on norms/biases: ours), per-step linear warm-up + cosine, segmentation loss
0.4·CE + 0.6·Dice (:mod:`training.finetune.losses`), classification CE, best
checkpoint by validation Dice (segmentation) or validation loss
(classification). Preprocessing comes from the initialising checkpoint's
model card (unless overridden), so it is identical to pretraining and inference.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from training.data.augment import AugmentConfig, augment_batch
from training.data.datasets import SliceDataset
from training.data.preprocessing import Preprocessing, to_model_input
from training.data.slice_datasets import CacheBudget, CachedDataset
from training.finetune import recipe
from training.finetune.losses import DiceCELoss
from training.finetune.metrics import SegmentationMeter, classification_metrics
from training.finetune.recipe import (  # noqa: F401 (re-exported: where callers import them)
    build_finetune_model,
    build_for_config,
    is_random_init,
)
from training.runtime.device import flush_denormals
from training.runtime.optim import WarmupCosine, build_optimizer

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
    # prepared (model-resolution) training and validation items kept in memory, in MiB;
    # 0 prepares every slice at every use (see training.data.slice_datasets.CachedDataset)
    cache_mb: float = 1024.0
    # recipe for pretrained backbones (training.finetune.recipe); None = the recipe default
    # for the init (recipe.resolve): PRETRAINED_DEFAULT when pretrained, neutral when random
    transfer: str | None = None  # "full" (encoder + decoder, the paper) | "encoder"
    rescale: str | None = None  # "std": transferred weights to the fresh init's std | "none"
    layer_decay: float | None = None  # layer-wise lr decay (1.0 = off)
    freeze_encoder_steps: int | None = None  # train only what follows the encoder at first

    def __post_init__(self):
        from training.finetune.recipe import validate
        validate(self.transfer, self.rescale, self.layer_decay, self.freeze_encoder_steps)
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
    from training.models import task_of

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
    :mod:`training.data.datasets`; standardisation uses ``train_data.prep``.
    Raises :class:`DataError` for empty or out-of-range data and
    :class:`FloatingPointError` if the loss diverges (never trains on NaNs).
    """
    from training.models import task_of

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
    if cfg.cache_mb > 0:  # training items first, then validation, in one budget
        budget = CacheBudget(int(cfg.cache_mb * 2**20))
        train_data = CachedDataset(train_data, budget)
        val_data = CachedDataset(val_data, budget) if val_data is not None else None
    device = torch.device(cfg.device)
    flush_denormals(device)
    state = state if state is not None else TrainState()
    prep: Preprocessing = train_data.prep
    model.to(device)
    trainable = configure_trainable(model, cfg.mode)
    if not trainable:
        raise ValueError(f"mode {cfg.mode!r} leaves nothing to train")
    layer_decay = cfg.layer_decay if cfg.layer_decay is not None else 1.0
    freeze_steps = cfg.freeze_encoder_steps or 0
    if layer_decay != 1.0 or freeze_steps:
        optimizer = recipe.build_optimizer(model, cfg.lr, cfg.weight_decay, layer_decay)
    else:
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
            if freeze_steps and state.step <= freeze_steps:  # freeze, then unfreeze
                recipe.set_phase(model, trainable, freeze_steps, state.step)
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


# -- predict and score ------------------------------------------------------------------------
@torch.no_grad()
def predict_and_score(model: nn.Module, dataset: SliceDataset, task: str,
                      prep: Preprocessing | None = None, batch_size: int = 16, device="cpu",
                      loss_fn: nn.Module | None = None, class_names: Sequence[str] | None = None,
                      keep_predictions: bool = False) -> dict:
    """Run ``model`` over ``dataset`` and compute the task's metrics.

    Returns the metrics dict (:class:`SegmentationMeter` result or
    :func:`classification_metrics`), plus ``loss`` when ``loss_fn`` is given,
    and ``rows`` (per-image rows) for the CSV outputs.
    """
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    prep = prep or dataset.prep
    was_training = model.training
    model.eval()
    nc = model.num_classes
    name_of = dataset.item_name if isinstance(dataset, CachedDataset) else \
        (lambda i: dataset.load(i).name)
    names_all = [name_of(i) for i in range(len(dataset))] if keep_predictions or \
        task == "segmentation" else None
    meter = SegmentationMeter(nc, class_names) if task == "segmentation" else None
    losses, weights, probs, labels, preds = [], [], [], [], []
    try:
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            items = [dataset[i] for i in idx]
            x = torch.stack([it[0] for it in items]).to(device)
            y = torch.stack([it[1] for it in items]).to(device)
            out = model(to_model_input(x, prep)).float()
            if loss_fn is not None:
                losses.append(float(loss_fn(out, y)))
                weights.append(len(idx))
            if task == "segmentation":
                pred = out.argmax(1)
                meter.update(pred, y, [names_all[i] for i in idx])
                if keep_predictions:
                    preds.append(pred.cpu().numpy().astype(np.uint8))
            else:
                probs.append(out.softmax(1).cpu().numpy())
                labels.append(y.cpu().numpy())
    finally:
        model.train(was_training)
    if task == "segmentation":
        res = meter.result()
        res["rows"] = meter.image_rows()
        if keep_predictions:
            res["predictions"] = np.concatenate(preds)
    else:
        p, t = np.concatenate(probs), np.concatenate(labels)
        if (t < 0).any():
            raise ValueError("the evaluation set has unlabelled items")
        res = classification_metrics(t, p, class_names)
        names = names_all or [str(i) for i in range(len(t))]
        cn = list(class_names or [f"class {i}" for i in range(p.shape[1])])
        res["rows"] = [{"image": n, "ground_truth": int(g), "prediction": int(q.argmax()),
                        **{f"prob_{cn[c]}": float(q[c]) for c in range(p.shape[1])}}
                       for n, g, q in zip(names, t, p, strict=False)]
    if loss_fn is not None:
        res["loss"] = float(np.average(losses, weights=weights))
    return res
