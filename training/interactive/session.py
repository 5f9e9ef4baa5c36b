"""A few-shot fine-tuning run on the user's corrections, saved as a new model version.

:func:`session_steps` is a generator (the napari Fine-tune widget drives it in a child
process through :mod:`training.interactive.finetune`; :func:`run_session` runs it
headless):

1. check the training set (:func:`training.interactive.corrections.validate_sets`: a clear
   :class:`~training.interactive.corrections.CorrectionError` for an empty or
   single-class set, before anything is loaded);
2. score the starting model on every corrected slice (``{'kind': 'baseline'}``, per class);
3. train on all the corrected slices (``phase`` ``train``), then, to judge the run
   honestly, k-fold cross-validate it: with ``k`` folds (default 3) of the corrected
   slices, the same training from the same start on the other folds, scored on the
   held-out fold (``phase`` ``fold``). Every corrected slice is thus predicted once by a
   model that never saw it; per-class Dice is pooled over those slices and reported
   with the number of slices behind each class, next to the starting model's on the
   same slices. With fewer than 3 corrected slices there is nothing honest to report:
   the run says "too few corrected slices to validate" and gives no number. Explicit
   ``val_sets`` (other studies) replace the cross-validation: one training, validated
   on them every ``val_every`` steps, the best weights kept;
4. on CUDA out-of-memory, restart with half the batch size (``{'kind': 'oom'}``), down
   to 1, then fail with a clear message;
5. save the weights trained on all slices as a new immutable version
   (:class:`training.weights.versions.VersionStore`) with provenance: parent, study keys
   (UID or content hash, never names) and slice indices, hyper-parameters, metrics and
   duration.

Versions and safety:

* The lineage of a base model that is itself a version is that version's lineage; for
  any other base it is ``<base name>-corrected``, whose first version (``v0001``) is a
  copy of the base, so a rollback to the original is always possible.
* A finished run's version becomes active **unless it is judged worse than its parent**
  (cross-validated score below the starting model's on the same slices): then it is
  saved but not made active, and the message says so; the user decides.
* A **stopped** run saves its weights only if the training on all slices completed (a
  stop during the cross-validation), and does not make them active. A stop during that
  training, or a run that raised, writes nothing: the previous active version and the
  folder are untouched (versions are written atomically, and only at the end).
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
from training.interactive import scoring
from training.interactive.corrections import (
    VALIDATION_MODES,
    CorrectionError,
    CorrectionSet,
    kfold,
    validate_sets,
    validation_plan,
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
    validation: str = "auto"  # auto (k-fold with >= 3 corrected slices) | none
    folds: int = 3
    augment: bool = True
    warmup_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or self.val_every < 1 or self.batch_size < 1 or self.folds < 2:
            raise ValueError("steps, val_every and batch_size must be >= 1, folds >= 2")
        if self.validation not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, "
                             f"got {self.validation!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def total_steps(self, n_train: int, batch_size: int | None = None) -> int:
        if self.epochs is None:
            return self.steps
        return self.epochs * math.ceil(n_train / (batch_size or self.batch_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SessionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SessionResult:
    status: str  # "done" | "stopped" (saved, not active) | "stopped-unsaved"
    entry: ModelEntry | None  # the new version (None if nothing was saved)
    previous_active: ModelEntry | None
    lineage: str
    metric: str  # "cv_dice" | "val_dice" | "cv_accuracy" | "val_accuracy" | "" (no score)
    start_score: float | None  # the starting model on the validation slices
    best_score: float | None  # the run on the same slices (None: not validated)
    best_step: int | None
    duration_s: float
    history: list = field(default_factory=list)
    message: str = ""
    validation: str = "none"  # "k-fold" | "given" | "too-few" | "none"
    n_val: int = 0  # slices behind the score
    per_class: list = field(default_factory=list)  # {index, name, score, start, n_slices}
    active: bool = False  # the new version was made active
    judged_worse: bool = False

    def to_dict(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("entry", "previous_active")}
        d["entry"] = str(self.entry.path) if self.entry else None
        d["previous_active"] = str(self.previous_active.path) if self.previous_active else None
        return d


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


def _train(model, start_state, data, cfg, fcfg_kw, total, stop_event, names, offset,
           on_val=None):
    """Train from ``start_state`` for ``total`` steps; yields events with global steps
    (``offset`` +), calls ``on_val(step)`` every ``val_every`` steps. Returns True if it
    ran to the end, False if stopped."""
    model.load_state_dict(start_state)
    epochs = max(1, math.ceil(total / cfg.val_every))
    fcfg = FinetuneConfig(epochs=epochs, steps_per_epoch=cfg.val_every, **fcfg_kw)
    for ev in finetune_steps(model, data, None, fcfg, stop_event, TrainState(), names):
        if ev["kind"] == "step":
            yield {"kind": "step", "step": offset + ev["step"], "loss": ev["loss"]}
        elif ev["kind"] == "epoch":
            extra = on_val(ev["step"]) if on_val is not None else {}
            yield {"kind": "epoch", "step": offset + ev["step"], "local_step": ev["step"],
                   "train_loss": ev.get("train_loss"), **extra}
        elif ev["kind"] == "stopped":
            yield {"kind": "stopped", "step": offset + ev["step"]}
            return False
    return True


def session_steps(base: ModelEntry, sets: Sequence[CorrectionSet], cfg: SessionConfig,
                  versions: VersionStore, stop_event: threading.Event | None = None,
                  lineage: str | None = None, val_sets: Sequence[CorrectionSet] | None = None
                  ) -> Generator[dict, None, SessionResult]:
    """Fine-tune ``base`` on the corrected slices of ``sets``; see the module docstring.

    ``val_sets``: explicit validation slices (e.g. other studies) instead of the k-fold
    cross-validation of ``sets`` (``cfg.validation`` is then ignored).
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
    prep, names, nc = card.prep, card.class_names, card.num_classes

    def dataset(chosen, sets=sets):
        return _Concat([s.to_dataset(prep, [i for k2, i in chosen if k2 == k])
                        for k, s in enumerate(sets)], task, prep)

    how = "given" if val_sets else validation_plan(len(items), cfg.validation)
    folds = kfold(items, cfg.folds, cfg.seed) if how == "k-fold" else []
    val_data = None
    if how == "given":
        val_data = dataset([(k, i) for k, s in enumerate(val_sets) for i in s.training_slices()],
                           val_sets)
    all_data = dataset(items)
    kind = {"k-fold": "cv", "given": "val"}.get(how)
    metric = f"{kind}_{'dice' if task == 'segmentation' else 'accuracy'}" if kind else ""
    lineage = lineage or lineage_for(base, versions)
    previous = versions.active(lineage)
    device = torch.device(cfg.device)
    model, _ = load_checkpoint(base.path, device="cpu")
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(device)
    batch = min(cfg.batch_size, len(all_data))
    n_val = len(val_data) if val_data is not None else len(items) if folds else 0
    start_stats = scoring.class_stats(model, val_data or all_data, task, prep, device, nc) \
        if kind else None
    start_score = scoring.score_of(start_stats, task) if kind else None

    def attempt(batch):
        """One try at a batch size: train on all slices, then the folds."""
        total = cfg.total_steps(len(all_data), batch)
        grand = total * (1 + len(folds))
        yield {"kind": "start", "total_steps": grand, "n_train": len(all_data), "n_val": n_val,
               "validation": how, "metric": metric, "lineage": lineage, "batch_size": batch,
               "folds": len(folds), "steps_per_run": total}
        if kind:
            yield {"kind": "baseline", "step": 0, "score": start_score, "metric": metric,
                   "per_class": scoring.per_class(start_stats, start_stats, task, names)}
        fkw = dict(task=task, num_classes=nc, mode=cfg.mode, batch_size=batch,
                   lr=cfg.learning_rate, warmup_epochs=cfg.warmup_steps / cfg.val_every,
                   augment=cfg.augment, seed=cfg.seed, device=str(device), eval_batch_size=16)
        out = {"total": total, "grand": grand, "history": [], "fold_stats": {},
               "status": "done", "best": {"score": None, "step": None, "state": None,
                                          "stats": None}}
        best, history = out["best"], out["history"]

        def given_val(step):
            st = scoring.class_stats(model, val_data, task, prep, device, nc)
            sc = scoring.score_of(st, task)
            if sc is not None and (best["score"] is None or sc > best["score"]):
                best.update(score=sc, step=step, stats=st, state={
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            history.append({"step": step, metric: sc})
            return {"score": sc, "metric": metric}

        def fold_val_fn(step, held, f):
            st = scoring.class_stats(model, held, task, prep, device, nc)
            if step >= total:
                out["fold_stats"][f] = st
            sc = scoring.score_of(st, task)
            history.append({"step": step, "fold": f + 1, metric: sc})
            return {"score": sc, "metric": metric, "fold": f + 1}

        yield {"kind": "phase", "phase": "train", "fold": None, "folds": len(folds)}
        if not (yield from _train(model, start_state, all_data, cfg, fkw, total, stop_event,
                                  names, 0, given_val if how == "given" else None)):
            out["status"] = "stopped" if how == "given" and best["state"] is not None \
                else "stopped-unsaved"
        out["final"] = best["state"] if how == "given" else {
            k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for f, held in enumerate(folds if out["status"] == "done" else []):
            yield {"kind": "phase", "phase": "fold", "fold": f + 1, "folds": len(folds)}
            held_data = dataset(held)
            if not (yield from _train(model, start_state,
                                      dataset([it for it in items if it not in held]), cfg,
                                      fkw, total, stop_event, names, total * (f + 1),
                                      lambda step, d=held_data, f=f: fold_val_fn(step, d, f))):
                out["status"] = "stopped"
                break
        return out

    while True:  # once, or again with half the batch after an out-of-memory error
        try:
            out = yield from attempt(batch)
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
            yield {"kind": "oom", "batch_size": batch,
                   "message": f"out of memory on {device}: retrying with batch size {batch}"}
    total, grand, history, best = out["total"], out["grand"], out["history"], out["best"]
    fold_stats, status, final = out["fold_stats"], out["status"], out["final"]

    # the score of the run, on the same slices as the starting model's
    run_stats = best["stats"] if how == "given" else \
        sum(fold_stats.values()) if fold_stats else None
    score = scoring.score_of(run_stats, task) if run_stats is not None else None
    per_class_ = scoring.per_class(run_stats, start_stats, task, names) \
        if run_stats is not None else []
    n_scored = int(sum(len(folds[f]) for f in fold_stats)) if folds else n_val
    if folds and fold_stats:
        yield {"kind": "cv", "step": grand, "score": score, "metric": metric,
               "per_class": per_class_, "n_val": n_scored}
    duration = time.perf_counter() - t0
    worse = score is not None and start_score is not None and score < start_score
    common = dict(previous_active=previous, lineage=lineage, metric=metric,
                  start_score=start_score, best_score=score,
                  best_step=best["step"] if how == "given" else total, history=history,
                  validation=how, n_val=n_scored, per_class=per_class_, judged_worse=worse)
    if status == "stopped-unsaved" or final is None:
        return SessionResult("stopped-unsaved", None, duration_s=duration, message=(
            "stopped before the model was trained: nothing was saved; the active version is "
            "unchanged"), **common)
    yield {"kind": "saving"}
    model.load_state_dict(final)
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
    summary = scoring.summary(how, metric, start_score, score, n_scored, len(items))
    fold_slices = [[i for _, i in f] for f in folds]
    new_card = ModelCard(
        name=card.name, task=task, architecture=card.architecture, num_classes=nc,
        classes=card.classes, preprocessing=card.preprocessing, domain=dict(card.domain),
        description=(
            f"{card.name} fine-tuned on {len(all_data)} corrected slice(s) ({cfg.mode} mode, "
            f"{total} steps); {summary}"),
        provenance={
            "kind": "correction fine-tune", "status": status,
            "base_model": {"name": card.name, "weights_sha256": card.weights_sha256},
            "hyperparameters": {**cfg.to_dict(), "learning_rate": cfg.learning_rate,
                                "batch_size_used": batch, "total_steps": total},
            "data": {"validation": how, "n_train": len(items), "n_val": n_scored,
                     "folds": fold_slices,
                     "studies": [s.provenance([i for k2, i in items if k2 == k],
                                              [i for k2, i in items if k2 == k and folds])
                                 for k, s in enumerate(sets)]},
            "metrics": {"selection": metric or None, "validation": how, "start": start_score,
                        "best": score, "best_step": common["best_step"],
                        "n_val_slices": n_scored, "per_class": per_class_,
                        "judged_worse": worse, "history": history},
            "duration_s": round(duration, 2)})
    make_active = status == "done" and not worse
    entry = versions.add_version(model, new_card, lineage, parent=parent,
                                 make_active=make_active)
    msg = f"saved {entry.path.name}: {summary}"
    prev = previous.path.name if previous else "the previous version"
    if status == "stopped":
        msg += f"; stopped, so {prev} stays active (Make active to use the new one)"
    elif worse:
        msg += (f"; judged WORSE than its parent, so {prev} stays active (Make active to use "
                "the new one anyway)")
    return SessionResult(status, entry, duration_s=time.perf_counter() - t0, message=msg,
                         active=make_active, **common)


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
