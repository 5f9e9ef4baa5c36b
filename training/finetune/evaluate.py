"""Evaluate a segmentation or classification checkpoint; k-fold cross-validation.

    python -m training.evaluate --checkpoint runs/seg/best --test-csv test_fold1.csv --out eval/
    python -m training.evaluate --checkpoint runs/seg/best --images vols/ --labels labs/ --out eval/
    python -m training.evaluate --cv auto --init mae/ --task segmentation --synthetic 200 --out cv/

Outputs (in ``--out``): ``metrics.json`` (everything), ``per_class.csv``,
``confusion_matrix.csv`` and ``per_image.csv`` (segmentation) or
``predictions.csv`` (classification: image, ground truth, class
probabilities, like the official ``results_prob.csv``). Cross-validation adds
``folds.csv`` and ``cv_summary.json``.

Metrics: see :mod:`training.finetune.metrics`. Masks are compared at the model's
input resolution (both resized to ``input_size``; masks nearest-neighbour),
as in the official code.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from training.data.datasets import SliceDataset
from training.finetune.cli import add_data_args, add_train_args
from training.finetune.engine import predict_and_score
from training.finetune.metrics import summarize_folds
from training.finetune.runner import finetune
from training.runtime.atomic import atomic_write_text


# -- outputs ---------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    import io
    buf = io.StringIO()
    fields = list(rows[0])
    for r in rows[1:]:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def write_results(res: dict, out_dir: str | os.PathLike, task: str,
                  class_names: Sequence[str] | None = None, extra: dict | None = None) -> Path:
    """metrics.json + per_class.csv + confusion_matrix.csv + per_image/predictions.csv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = res.get("rows", [])
    metrics = {k: v for k, v in res.items() if k not in ("rows", "predictions")}
    if extra:
        metrics.update(extra)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _write_csv(out / "per_class.csv", res.get("per_class", []))
    cm = res["confusion_matrix"]
    names = list(class_names or [f"class {i}" for i in range(len(cm))])
    _write_csv(out / "confusion_matrix.csv",
               [{"truth \\ prediction": names[i], **{names[j]: cm[i][j] for j in range(len(cm))}}
                for i in range(len(cm))])
    _write_csv(out / ("per_image.csv" if task == "segmentation" else "predictions.csv"), rows)
    return out


def headline(res: dict, task: str) -> str:
    if task == "segmentation":
        return (f"mean Dice {res['mean_dice']:.4f} (pooled {res['mean_dice_pooled']:.4f}), "
                f"precision {res['mean_precision']:.4f}, recall {res['mean_recall']:.4f} "
                f"over {res['num_images']} images")
    fmt = lambda v: "undefined" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"ROC AUC {fmt(res['roc_auc'])}, PR AUC {fmt(res['pr_auc'])}, "
            f"accuracy {res['accuracy']:.4f} over {res['num_samples']} samples")


# -- cross-validation ----------------------------------------------------------------------
def cross_validate(make_model, dataset: SliceDataset, cfg, k: int | None = None, seed: int = 0,
                   out_dir: str | os.PathLike | None = None, class_names=None,
                   progress: bool = True) -> dict:
    """k-fold CV: for each fold fine-tune a fresh ``make_model()`` on the other folds
    (validating on a held-out 10 % of them) and evaluate on the fold.

    ``k=None`` uses the paper's rule (5 folds below 4,000 images). Returns
    ``{'folds': [...], 'summary': {metric: {mean, std, n}}}``.
    """
    from training.data.splits import default_num_folds, holdout_split, kfold_splits

    n = len(dataset)
    k = k or default_num_folds(n)
    if k < 2:
        raise ValueError(f"{n} images: the paper's protocol uses a fixed split, not k-fold "
                         "(pass an explicit --cv K to force cross-validation)")
    groups = dataset.groups()
    labels = dataset.labels() if cfg.task == "classification" else None
    folds = kfold_splits(n, k, seed, groups, labels if len(set(groups)) == n else None)
    results = []
    for f, (train_idx, test_idx) in enumerate(folds):
        tr_groups = [groups[i] for i in train_idx]
        keep, val = holdout_split(len(train_idx), 0.1, seed + f, tr_groups)
        model, meta = make_model()
        meta.setdefault("progress", progress)
        fold_dir = Path(out_dir) / f"fold{f}" if out_dir else None
        finetune(model, dataset.subset(train_idx[keep]), dataset.subset(train_idx[val]), cfg,
                 fold_dir, **meta)
        if fold_dir is not None:
            from training.weights.checkpoint import load_checkpoint
            model, _ = load_checkpoint(fold_dir / "best")
        res = predict_and_score(model.to(cfg.device), dataset.subset(test_idx), cfg.task,
                                dataset.prep, cfg.batch_size, cfg.device,
                                class_names=class_names)
        row = {"fold": f, "n_train": int(len(keep)), "n_val": int(len(val)),
               "n_test": int(len(test_idx))}
        row.update({k_: v for k_, v in res.items() if isinstance(v, (int, float)) or v is None})
        results.append(row)
        if fold_dir is not None:
            write_results(res, fold_dir / "test", cfg.task, class_names)
    keys = (["mean_dice", "mean_dice_pooled", "mean_precision", "mean_recall"]
            if cfg.task == "segmentation" else ["roc_auc", "pr_auc", "accuracy"])
    summary = {"k": k, "folds": results, "summary": summarize_folds(results, keys)}
    if out_dir:
        _write_csv(Path(out_dir) / "folds.csv", results)
        atomic_write_text(Path(out_dir) / "cv_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# -- CLI -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a fine-tuned VIS-MAE checkpoint on labelled data (Dice/precision/"
                    "recall per class for segmentation; ROC AUC, PR AUC and confusion matrix for "
                    "classification), or run k-fold cross-validation of the fine-tuning recipe "
                    "(--cv). Writes metrics.json and CSV tables to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--checkpoint", help="a fine-tuned checkpoint directory (ours) or an official "
                                        "fine-tuned .pth; not used with --cv")
    g.add_argument("--cv", metavar="K", help="k-fold cross-validation instead: 'auto' (5 folds "
                   "below 4,000 images, as in the paper) or a number; fine-tunes one model per "
                   "fold with the training options below, from --init")
    g.add_argument("--out", required=True, help="output folder for metrics.json and CSV tables")
    g.add_argument("--batch-size-eval", type=int, default=16, help="inference batch size")
    add_data_args(p, evaluate=True)
    add_train_args(p, for_cv=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.data.datasets import DataError
    from training.finetune.cli import (
        class_info,
        datasets_from_args,
        make_model_factory,
        prep_from_args,
        setup_runtime,
        train_config_from_args,
    )
    from training.weights.checkpoint import load_any

    args = build_parser().parse_args(argv)
    setup_runtime(args)
    out = Path(args.out)
    try:
        if args.cv:
            cfg = train_config_from_args(args)
            factory, prep = make_model_factory(args, cfg)
            data = datasets_from_args(args, cfg.task, prep, cfg.num_classes, purpose="cv")
            names = class_info(args, cfg.task, cfg.num_classes)[0]
            k = None if args.cv == "auto" else int(args.cv)
            res = cross_validate(factory, data["train"], cfg, k, args.seed, out, names)
            for key, s in res["summary"].items():
                if s["mean"] is not None:
                    print(f"{key}: {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
            print(f"wrote {out / 'cv_summary.json'} and {out / 'folds.csv'}")
            return 0
        if not args.checkpoint:
            print("error: give --checkpoint (or --cv)", file=sys.stderr)
            return 2
        model, card, _ = load_any(args.checkpoint, args.device, task=args.task,
                                  num_classes=args.num_classes)
        if card.task not in ("segmentation", "classification"):
            print(f"error: {args.checkpoint} is a {card.task} checkpoint; evaluate a fine-tuned "
                  "one", file=sys.stderr)
            return 2
        prep = prep_from_args(args, card.prep)
        data = datasets_from_args(args, card.task, prep, card.num_classes, purpose="evaluate")
        test = data["test"]
        test.validate(card.num_classes, "test set")
        res = predict_and_score(model, test, card.task, prep, args.batch_size_eval, args.device,
                                class_names=card.class_names)
        write_results(res, out, card.task, card.class_names,
                      {"checkpoint": str(args.checkpoint), "preprocessing": prep.to_dict()})
        print(headline(res, card.task))
        print(f"wrote {out / 'metrics.json'}")
        return 0
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
