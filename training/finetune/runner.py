"""Run :func:`~training.finetune.engine.finetune_steps` to the end: progress (a bar on a
terminal, plain lines otherwise, one line per epoch), a JSON-lines log, atomic
``last``/``best`` checkpoints and ``train_state.pt`` for ``--resume``."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from training.data.datasets import SliceDataset
from training.finetune.engine import (
    LOG_NAME,
    STATE_NAME,
    FinetuneConfig,
    TrainState,
    finetune_steps,
)
from training.runtime.atomic import atomic_path
from training.runtime.progress import Progress

log_ = logging.getLogger("training.finetune")


def epoch_line(ev: dict) -> str:
    """One plain line per epoch: losses, validation metrics, and whether it is the best."""
    parts = [f"epoch {ev['epoch'] + 1}/{ev['epochs']}", f"step {ev['step']}"]
    if ev.get("train_loss") is not None:
        parts.append(f"train loss {ev['train_loss']:.4f}")
    for key, label in (("val_loss", "val loss"), ("val_dice", "val Dice"),
                       ("val_auc", "val ROC AUC"), ("val_accuracy", "val accuracy")):
        if ev.get(key) is not None:
            parts.append(f"{label} {ev[key]:.4f}")
    parts.append(f"{ev['epoch_seconds']:.1f} s")
    line = ", ".join(parts)
    return line + (" (best so far)" if ev.get("is_best") else "")


# -- wrapper: progress, log, checkpoints, resume ------------------------------------------------
def finetune(model: nn.Module, train_data: SliceDataset, val_data: SliceDataset | None,
             cfg: FinetuneConfig, out_dir: str | os.PathLike | None, *, name: str = "",
             classes: list[dict] | None = None, parent: str = "random init",
             transfer: dict | None = None, resume: bool = False, progress: bool = True,
             stop_event=None, description: str = "",
             preprocessing_origin: dict | None = None) -> dict:
    """Run :func:`finetune_steps` with progress, ``log.jsonl``, and atomic checkpoints
    ``out_dir/last`` (every epoch), ``out_dir/best`` and ``out_dir/train_state.pt``.

    With ``progress``, a tqdm bar on a terminal (plain log lines otherwise) and one line per
    epoch on stderr with the training loss and the validation metrics.
    ``preprocessing_origin`` (where the preprocessing came from, what was overridden) goes
    into the model card's provenance.
    ``resume`` continues from ``last`` + ``train_state.pt`` (epoch boundaries:
    a run stopped mid-epoch redoes that epoch). Returns a summary dict (also
    ``summary.json``). With ``out_dir=None`` nothing is written (the model is
    trained in place).
    """
    from training.weights.checkpoint import load_checkpoint, save_checkpoint

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
                "preprocessing": preprocessing_origin or {"from": "the training data's"},
                "data": data_info, "metrics": metrics, "epoch": state.epoch, "step": state.step}
        save_checkpoint(model, out / kind, name=name or f"{cfg.task} ({kind})",
                        classes=classes, preprocessing=train_data.prep.to_dict(),
                        provenance=prov, description=description, overwrite=True)

    write_log({"kind": "start", "config": cfg.to_dict(), "parent": parent, "resume_epoch":
               state.epoch, **data_info})
    steps_per_epoch = cfg.steps_per_epoch or math.ceil(len(train_data) / cfg.batch_size)
    bar = Progress(cfg.epochs * steps_per_epoch,
                   f"fine-tune {cfg.task}", unit="step", initial=state.step, enabled=progress,
                   logger=log_)
    last_ev: dict = {}
    try:
        for ev in finetune_steps(model, train_data, val_data, cfg, stop_event, state, names):
            last_ev = ev
            if ev["kind"] == "step":
                bar.update(1, loss=ev["loss"], lr=ev["lr"])
                if ev["step"] % cfg.log_every == 0:
                    write_log(ev)
            elif ev["kind"] == "epoch":
                write_log(ev)
                if progress:
                    log_.info("%s", epoch_line(ev))
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
        from training.runtime.atomic import atomic_write_text
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _default_classes(cfg: FinetuneConfig) -> list[dict]:
    from training.weights.card import default_classes
    return default_classes(cfg.num_classes, cfg.task)


def make_classes(names: Sequence[str] | None, num_classes: int, task: str,
                 colors: Sequence[str] | None = None) -> list[dict]:
    """``[{index, name, color}]`` for the model card (defaults fill what is not given)."""
    from training.weights.card import default_classes
    out = default_classes(num_classes, task)
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        for c, n in zip(out, names, strict=False):
            c["name"] = n
    if colors:
        if len(colors) != num_classes:
            raise ValueError(f"{len(colors)} colours for {num_classes} classes")
        for c, col in zip(out, colors, strict=False):
            c["color"] = col
    return out
