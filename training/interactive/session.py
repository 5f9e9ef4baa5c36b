"""A few-shot fine-tuning run on the user's corrections, saved as a new model version.

:func:`session_steps` is a generator (the napari Fine-tune widget drives it
from a worker thread; :func:`run_session` runs it headless):

1. check the training set (:func:`training.interactive.corrections.validate_sets`: a clear
   :class:`~training.interactive.corrections.CorrectionError` for an empty or
   single-class set, before anything is loaded);
2. split the corrected slices for validation (hold-out, leave-one-out, or none,
   in which case the score is the *training* Dice and is labelled
   ``train_dice``);
3. score the starting model (``{'kind': 'baseline'}``), then train with
   :func:`training.finetune.finetune_steps`, validating every ``val_every``
   steps, keeping the best weights in memory; every event of the loop is
   passed on (``step`` with ``loss``, ``epoch`` with ``score``/``is_best``);
4. on CUDA out-of-memory, restart with half the batch size
   (``{'kind': 'oom'}``), down to 1, then fail with a clear message;
5. save the best weights as a new immutable version
   (:class:`training.weights.versions.VersionStore`) with provenance: parent,
   study keys (UID or content hash, never names) and slice indices,
   hyper-parameters, metrics and duration.

Versions and safety:

* The lineage of a base model that is itself a version is that version's
  lineage; for any other base it is ``<base name>-corrected``, whose first
  version (``v0001``) is a copy of the base, so a rollback to the original is
  always possible.
* A finished run's version becomes active. A **stopped** run saves its best
  weights as a version only if at least one validation happened, and does
  **not** make it active (the user can, from the version list). A stopped run
  without a validation, or a run that raised, writes nothing: the previous
  active version and the folder are untouched (versions are written
  atomically, and only at the end).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import torch

from training.data.datasets import SliceDataset
from training.finetune.engine import MODES, FinetuneConfig, TrainState, finetune_steps
from training.interactive.corrections import (
    CorrectionError,
    CorrectionSet,
    split_validation,
    validate_sets,
)
from training.weights.card import ModelCard
from training.weights.store import ModelEntry, _slug
from training.weights.versions import VERSION_RE, VersionStore

DEFAULT_LR = {"decoder": 1e-3, "head": 1e-3, "full": 3e-4}


@dataclass
class SessionConfig:
    """Hyper-parameters of a few-shot run (stored in the new version's card)."""

    mode: str = "decoder"
    steps: int = 150  # total optimizer steps (ignored when ``epochs`` is set)
    epochs: int | None = None  # passes over the training slices, instead of ``steps``
    val_every: int = 10  # optimizer steps between validations
    batch_size: int = 4
    lr: float | None = None  # None: DEFAULT_LR[mode]
    device: str = "cpu"
    validation: str = "auto"  # auto | hold-out | leave-one-out | none
    val_fraction: float = 0.2
    augment: bool = True
    warmup_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or self.val_every < 1 or self.batch_size < 1:
            raise ValueError("steps, val_every and batch_size must be >= 1")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def total_steps(self, n_train: int, batch_size: int | None = None) -> int:
        if self.epochs is None:
            return self.steps
        return self.epochs * math.ceil(n_train / (batch_size or self.batch_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SessionResult:
    status: str  # "done" | "stopped" (saved, not active) | "stopped-unsaved"
    entry: ModelEntry | None  # the new version (None if nothing was saved)
    previous_active: ModelEntry | None
    lineage: str
    metric: str  # "val_dice" | "train_dice" | "val_accuracy" | "train_accuracy"
    start_score: float | None
    best_score: float | None
    best_step: int | None
    duration_s: float
    history: list = field(default_factory=list)
    message: str = ""


class _Concat(SliceDataset):
    """Items of several datasets in a row (one per study)."""

    def __init__(self, parts: Sequence[SliceDataset], task: str, prep):
        super().__init__(task, prep)
        self.parts = [p for p in parts if len(p)]
        self.index = [(k, i) for k, p in enumerate(self.parts) for i in range(len(p))]

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int):
        k, j = self.index[i]
        return self.parts[k].load(j)

    def group(self, i: int) -> str:
        k, j = self.index[i]
        return self.parts[k].group(j)


def lineage_for(base: ModelEntry, versions: VersionStore) -> str:
    """The lineage a run from ``base`` adds to (see the module docstring)."""
    p = base.path.resolve()
    if VERSION_RE.match(p.name) and p.parent.parent == versions.root.resolve():
        return p.parent.name
    return f"{_slug(base.card.name)}-corrected"


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def _score(model, data, task, prep, device, class_names) -> tuple[float, dict]:
    """-> (the selection score, extra metrics) of ``model`` on ``data``."""
    from training.finetune.engine import predict_and_score
    res = predict_and_score(model, data, task, prep, 16, device, None, class_names)
    if task == "segmentation":
        return float(res["mean_dice"]), {"val_dice_pooled": res["mean_dice_pooled"],
                                         "val_dice_per_class": [c["dice"]
                                                                for c in res["per_class"]]}
    return float(res["accuracy"]), {}


def session_steps(base: ModelEntry, sets: Sequence[CorrectionSet], cfg: SessionConfig,
                  versions: VersionStore, stop_event: threading.Event | None = None,
                  lineage: str | None = None, val_sets: Sequence[CorrectionSet] | None = None
                  ) -> Generator[dict, None, SessionResult]:
    """Fine-tune ``base`` on the corrected slices of ``sets``; see the module docstring.

    ``val_sets``: explicit validation slices (e.g. other studies) instead of a split of
    ``sets`` (``cfg.validation`` is then ignored).
    """
    from training.weights.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    card = base.card
    task = card.task
    if task not in ("segmentation", "classification"):
        raise CorrectionError(f"{card.name} is a {task} model; fine-tune a segmentation or "
                              "classification model")
    sets = [s for s in sets if s.training_slices()]
    for s in sets:
        if s.task != task:
            raise CorrectionError(f"the corrections are for {s.task}, the model does {task}")
    validate_sets(sets, card.num_classes)
    versions.check_writable()  # a read-only model folder is refused before training, not after
    if cfg.mode == "decoder" and task == "classification":
        cfg = dataclasses.replace(cfg, mode="head")
    items = [(k, i) for k, s in enumerate(sets) for i in s.training_slices()]
    prep = card.prep

    def dataset(chosen, sets=sets):
        return _Concat([s.to_dataset(prep, [i for k2, i in chosen if k2 == k])
                        for k, s in enumerate(sets)], task, prep)

    if val_sets:
        train_items, how = items, "given"
        val_items = [(k, i) for k, s in enumerate(val_sets) for i in s.training_slices()]
        val_data = dataset(val_items, val_sets)
        val_items = [(len(sets) + k, i) for k, i in val_items]  # not confused with training
    else:
        train_items, val_items, how = split_validation(items, cfg.validation, cfg.val_fraction,
                                                       cfg.seed)
        val_data = dataset(val_items) if val_items else None
    train_data = dataset(train_items)
    val_data = val_data if val_data is not None else train_data
    kind = "val" if val_items else "train"
    metric = f"{kind}_dice" if task == "segmentation" else f"{kind}_accuracy"
    lineage = lineage or lineage_for(base, versions)
    previous = versions.active(lineage)
    device = torch.device(cfg.device)
    model, _ = load_checkpoint(base.path, device="cpu")
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(device)
    names = card.class_names
    batch = min(cfg.batch_size, len(train_data))
    total = cfg.total_steps(len(train_data), batch)
    yield {"kind": "start", "total_steps": total, "n_train": len(train_data),
           "n_val": len(val_items), "validation": how, "metric": metric, "lineage": lineage,
           "batch_size": batch}
    start_score, extra = _score(model, val_data, task, prep, device, names)
    yield {"kind": "baseline", "step": 0, "score": start_score, "metric": metric, **extra}

    best_state, best_score, best_step, history, status = None, None, None, [], "done"
    while True:
        epochs = max(1, math.ceil(total / cfg.val_every))
        fcfg = FinetuneConfig(task=task, num_classes=card.num_classes, mode=cfg.mode,
                              epochs=epochs, steps_per_epoch=cfg.val_every, batch_size=batch,
                              lr=cfg.learning_rate, warmup_epochs=cfg.warmup_steps / cfg.val_every,
                              augment=cfg.augment, seed=cfg.seed, device=str(device),
                              eval_batch_size=16)
        state = TrainState()
        try:
            for ev in finetune_steps(model, train_data, val_data, fcfg, stop_event, state, names):
                ev = dict(ev, metric=metric, total_steps=epochs * cfg.val_every)
                if ev["kind"] == "epoch":
                    score = ev.get("val_dice", ev.get("val_accuracy"))
                    ev["score"] = score
                    if score is not None and (best_score is None or score > best_score):
                        best_score, best_step = float(score), ev["step"]
                        best_state = {k: v.detach().to("cpu", copy=True)
                                      for k, v in model.state_dict().items()}
                    ev["is_best"] = best_step == ev["step"]
                    history.append({"step": ev["step"], "train_loss": ev.get("train_loss"),
                                    metric: score})
                elif ev["kind"] == "stopped":
                    status = "stopped"
                yield ev
            break
        except Exception as e:  # noqa: BLE001 (only out-of-memory is handled)
            if not is_oom(e):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch <= 1:
                raise MemoryError(f"out of memory on {device} even with batch size 1: choose "
                                  "device 'cpu', mode 'decoder' or a smaller model") from e
            batch = max(1, batch // 2)
            model.load_state_dict(start_state)
            best_state, best_score, best_step, history = None, None, None, []
            yield {"kind": "oom", "batch_size": batch,
                   "message": f"out of memory on {device}: retrying with batch size {batch}"}

    duration = time.perf_counter() - t0
    common = dict(previous_active=previous, lineage=lineage, metric=metric,
                  start_score=start_score, best_score=best_score, best_step=best_step,
                  history=history)
    if best_state is None:
        return SessionResult("stopped-unsaved", None, duration_s=duration, message=(
            "stopped before the first validation: nothing was saved; the active version is "
            "unchanged"), **common)
    yield {"kind": "saving"}
    model.load_state_dict(best_state)
    model.to("cpu")
    parent = base
    if versions.active(lineage) is None:  # first run from this base: keep the base as v0001
        base_model, _ = load_checkpoint(base.path, device="cpu")
        base_card = ModelCard.from_dict(card.to_dict())
        base_card.provenance = {**base_card.provenance, "imported_from": {
            "name": card.name, "weights_sha256": card.weights_sha256}}
        parent = versions.add_version(base_model, base_card, lineage)
        previous = parent
        common["previous_active"] = previous
    new_card = ModelCard(
        name=card.name, task=task, architecture=card.architecture, num_classes=card.num_classes,
        classes=card.classes, preprocessing=card.preprocessing, description=(
            f"{card.name} fine-tuned on {len(train_data)} corrected slice(s) "
            f"({cfg.mode} mode, {best_step} steps, {metric} {best_score:.3f} vs "
            f"{start_score:.3f} before)"),
        provenance={
            "kind": "correction fine-tune", "status": status,
            "base_model": {"name": card.name, "weights_sha256": card.weights_sha256},
            "hyperparameters": {**cfg.to_dict(), "learning_rate": cfg.learning_rate,
                                "batch_size_used": batch, "total_steps": total},
            "data": {"validation": how, "n_train": len(train_items), "n_val": len(val_items),
                     "studies": [s.provenance([i for k2, i in train_items if k2 == k],
                                              [i for k2, i in val_items if k2 == k])
                                 for k, s in enumerate(sets)]},
            "metrics": {"selection": metric, "start": start_score, "best": best_score,
                        "best_step": best_step, "history": history},
            "duration_s": round(duration, 2)})
    entry = versions.add_version(model, new_card, lineage, parent=parent,
                                 make_active=status == "done")
    msg = (f"saved {entry.card.name}: {metric} {start_score:.3f} -> {best_score:.3f}")
    if status == "stopped":
        msg += f" (stopped; {previous.card.name if previous else 'the previous version'} stays "\
               "active - make the new version active from the list)"
    elif best_score < start_score:
        msg += " (worse than the starting model: consider a rollback)"
    return SessionResult(status, entry, duration_s=time.perf_counter() - t0, message=msg, **common)


def run_session(*args, on_event=None, **kwargs) -> SessionResult:
    """:func:`session_steps` run to completion (``on_event`` sees every event)."""
    gen = session_steps(*args, **kwargs)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)
