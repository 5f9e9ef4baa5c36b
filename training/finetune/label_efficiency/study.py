"""Run the protocol: per dataset, one pretraining shared by every seed and fraction, then for
every (seed, fraction) the same label subset fine-tuned from each arm; rows appended to
``WORK/rows.jsonl`` as they finish, so an interrupted study resumes where it stopped."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from training.finetune.label_efficiency.config import RECIPES, StudyConfig, check_arms
from training.finetune.label_efficiency.pretraining import model_config, pretrained_mae
from training.finetune.recipe import PRETRAINED_DEFAULT
from training.runtime.threads import configure_threads

ROWS = "rows.jsonl"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a torn last line (killed mid-write): that run is redone
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())  # one write: whole lines only
    finally:
        os.close(fd)


def arm_recipe(arm: str) -> dict:
    """FinetuneConfig recipe fields of an arm (None = the recipe default for the init)."""
    if arm in RECIPES:
        return RECIPES[arm].to_dict()
    return {}


def same_recipe(row: dict) -> bool:
    """Was this row fine-tuned with the recipe its arm means now?"""
    want = RECIPES[row["arm"]] if row["arm"] in RECIPES else PRETRAINED_DEFAULT
    return all(row.get(k) == v for k, v in want.to_dict().items())


def arm_of(row: dict) -> str:
    """An MAE-init row's arm is named by its recipe: "mae" when it is today's default
    (:data:`~training.finetune.recipe.PRETRAINED_DEFAULT`), else the :data:`RECIPES` entry it
    matches (so rows made under an earlier default keep their meaning)."""
    if row["arm"] in ("random", "mae_fast"):
        return row["arm"]
    recipe = {k: row.get(k) for k in PRETRAINED_DEFAULT.to_dict()}
    if recipe == PRETRAINED_DEFAULT.to_dict():
        return "mae"
    return next((name for name, r in RECIPES.items() if r.to_dict() == recipe), row["arm"])


def finetune_once(init, arch, train, val, test, fcfg, names):
    """Fine-tune from ``init`` (None: random ``arch``), keep the best epoch by validation
    Dice, score it on ``test`` -> (result, seconds, resolved FinetuneConfig)."""
    from training.finetune.engine import build_for_config, finetune_steps, predict_and_score

    torch.manual_seed(fcfg.seed)
    model, _, _, _, fcfg = build_for_config(fcfg, init, arch)
    t0 = time.perf_counter()
    best = None
    for ev in finetune_steps(model, train, val, fcfg, class_names=names):
        if ev["kind"] == "epoch" and ev.get("is_best"):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    secs = time.perf_counter() - t0
    if best is not None:
        model.load_state_dict(best)
    res = predict_and_score(model, test, fcfg.task, test.prep, 32, fcfg.device,
                            class_names=names)
    return res, secs, fcfg


def run_study(cfg: StudyConfig, out_dir, work_dir=None, mae_init: str | None = None,
              data: dict | None = None, task_cfg: dict | None = None,
              progress: bool = True, report_only: bool = False) -> list[dict]:
    """Run (or resume) the study; writes the outputs (``report.write_outputs``) into
    ``out_dir`` and returns the rows of this configuration.

    ``report_only``: train nothing; report the finished rows of this configuration.
    ``mae_init``: use this MAE checkpoint for every dataset instead of pretraining.
    ``data``: {'pool', 'val', 'test'} datasets of one custom dataset (name 'custom'; needs
    ``mae_init``); ``task_cfg``: {'classes': [...]} for it.
    """
    from training.data.splits import label_fraction_subsets
    from training.finetune.engine import FinetuneConfig
    from training.finetune.label_efficiency.data import load_data
    from training.finetune.label_efficiency.report import write_outputs

    check_arms(cfg.arms)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    if cfg.threads:
        configure_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = (Path(work_dir) if work_dir else out / "_work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows_path = work / ROWS
    meta = {"config": cfg.to_dict(), "torch_threads": torch.get_num_threads(),
            "data": {}, "pretraining": {},
            "command": " ".join(["python -m training.label_efficiency", *sys.argv[1:]])}
    arch = model_config(cfg)
    datasets = ["custom"] if data is not None else list(cfg.datasets)
    all_rows = []
    for name in datasets:
        if data is not None:
            from types import SimpleNamespace
            classes = (task_cfg or {}).get("classes")
            d = SimpleNamespace(name="custom", pool=data["pool"], val=data.get("val"),
                                test=data["test"], classes=classes,
                                description={k: len(v) for k, v in data.items() if v})
        else:
            d = load_data(name, cfg)
        meta["data"][name] = d.description
        names = [c["name"] for c in d.classes]
        inits = {}
        for arm in cfg.arms:
            if arm == "random":
                inits[arm] = None
            elif mae_init is not None:
                inits[arm] = str(mae_init)
            else:
                fast = arm == "mae_fast"
                label = f"{name}{' fast' if fast else ''}"
                known = label in meta["pretraining"]
                info = pretrained_mae(cfg, d, work, fast=fast, progress=progress,
                                      reuse_only=report_only)
                if info is None:
                    continue
                meta["pretraining"][label] = info
                inits[arm] = info["path"]
                if progress and not known:
                    print(f"{name} MAE{' (fast)' if fast else ''}: {info['steps']} steps in "
                          f"{info['seconds']:.0f} s; check: {info['check_text']}",
                          file=sys.stderr, flush=True)
        run_key = cfg.run_key(name) if mae_init is None else f"init:{mae_init}"
        rows = [dict(r, arm=arm_of(r)) for r in read_rows(rows_path)
                if r.get("run_key") == run_key]
        done = {(r["dataset"], r["arm"], r["percent"], r["seed"]): r for r in rows
                if r["arm"] == "random" or same_recipe(r)}
        steps_per_epoch = max(1, cfg.finetune_steps // cfg.evals)
        for seed in cfg.seeds:
            subsets = label_fraction_subsets(len(d.pool), cfg.fractions, seed, d.pool.groups())
            for frac in cfg.fractions:
                train = d.pool.subset(subsets[frac])
                for arm in cfg.arms:
                    key = (name, arm, round(frac * 100, 3), seed)
                    if key in done:
                        all_rows.append(done[key])
                        continue
                    if report_only:
                        continue
                    fcfg = FinetuneConfig(task="segmentation", num_classes=len(names),
                                          epochs=cfg.evals, steps_per_epoch=steps_per_epoch,
                                          batch_size=cfg.finetune_batch, lr=cfg.finetune_lr,
                                          warmup_epochs=0.5, seed=seed, device=cfg.device,
                                          **arm_recipe(arm))
                    res, secs, used = finetune_once(inits[arm], arch, train, d.val, d.test,
                                                    fcfg, names)
                    row = {"dataset": name, "arm": arm, "init": "random" if arm == "random"
                           else "mae", "percent": key[2], "fraction": frac,
                           "n_labeled": len(train), "seed": seed,
                           "mean_dice": res["mean_dice"],
                           "mean_dice_pooled": res["mean_dice_pooled"],
                           **{f"dice_{c['name']}": c["dice"] for c in res["per_class"][1:]},
                           "transfer": used.transfer, "rescale": used.rescale,
                           "layer_decay": used.layer_decay,
                           "freeze_encoder_steps": used.freeze_encoder_steps,
                           "finetune_seconds": round(secs, 1), "run_key": run_key}
                    append_row(rows_path, row)
                    all_rows.append(row)
                    if progress:
                        print(f"{name} seed {seed} {key[2]:g}% ({len(train)} images) {arm}: "
                              f"Dice {row['mean_dice']:.4f} in {secs:.0f} s",
                              file=sys.stderr, flush=True)
    meta["seconds_this_invocation"] = round(time.perf_counter() - t_start, 1)
    meta["cpu_seconds_this_invocation"] = round(time.process_time() - cpu_start, 1)
    meta["mae_init"] = mae_init
    for info in meta["pretraining"].values():  # no machine paths in the outputs
        info["path"] = str(Path("WORK") / Path(info["path"]).relative_to(work)) \
            if Path(info["path"]).is_relative_to(work) else info["path"]
    write_outputs(all_rows, out, meta)
    return all_rows


