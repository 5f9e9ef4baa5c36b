"""``python -m training.label_efficiency``: the command line of the study."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from training.data.synthetic import VARIATIONS
from training.finetune.label_efficiency.config import (
    BASE_ARMS,
    DATASETS,
    FULL,
    QUICK,
    RECIPES,
)
from training.runtime.threads import THREADS_HELP

# option -> StudyConfig field (None in the parsed arguments: the preset's value)
FIELDS = {"fractions": "fractions", "seeds": "seeds", "datasets": "datasets", "arms": "arms",
          "phantoms": "phantoms", "preset": "preset", "input_size": "input_size",
          "window_size": "window_size", "pretrain_steps": "pretrain_steps",
          "pretrain_batch": "pretrain_batch", "pretrain_lr": "pretrain_lr",
          "mask_unit": "mask_unit", "norm_pix_loss": "norm_pix_loss",
          "pretrain_augment": "pretrain_augment", "finetune_steps": "finetune_steps",
          "batch_size": "finetune_batch", "lr": "finetune_lr", "evals": "evals",
          "n_unlabeled": "n_unlabeled", "n_labeled": "n_labeled", "n_val": "n_val",
          "n_test": "n_test", "pretrain_seed": "pretrain_seed", "labeled_seed": "labeled_seed",
          "val_seed": "val_seed", "test_seed": "test_seed", "threads": "threads",
          "device": "device"}


def build_parser() -> argparse.ArgumentParser:
    q, f = QUICK, FULL
    p = argparse.ArgumentParser(
        prog="python -m training.label_efficiency",
        description="Label-efficiency study (paper Fig. 2/3): per dataset pretrain one MAE, "
                    "then fine-tune segmentation from it and from random init on nested "
                    "1-100 percent subsets of the labelled pool, several seeds, paired tests; "
                    "write label_efficiency.{csv,json,png} and label_efficiency_table.md. "
                    "Resumable: finished runs are kept in WORK/rows.jsonl and skipped.",
        epilog="Defaults in brackets: --quick value / full value (the full preset is for a "
               "GPU). Example: python -m training.label_efficiency --quick --out docs "
               "--work le_work --threads 1")
    p.add_argument("--quick", action="store_true",
                   help="the CPU preset: 64 px, 'small' model, 5 seeds, both datasets, about "
                        "30 min on 2 cores; without it the full (GPU) preset")
    p.add_argument("--out", required=True, help="folder for the outputs")
    p.add_argument("--work", help="folder for pretrained MAEs and finished runs "
                                  "(default OUT/_work); reuse it to resume")
    p.add_argument("--init", help="use this MAE checkpoint for every dataset (no pretraining)")
    p.add_argument("--train-csv", help="your own labelled pool (CSV image,mask; needs --init)")
    p.add_argument("--val-csv", help="validation CSV for model selection (with --train-csv)")
    p.add_argument("--test-csv", help="fixed held-out test CSV (with --train-csv)")
    p.add_argument("--num-classes", type=int, help="classes incl. background (with CSVs)")
    p.add_argument("--modality", help="modality of the CSV images ('CT' applies the window)")
    p.add_argument("--datasets", nargs="+", choices=DATASETS,
                   help=f"built-in datasets [{' '.join(q.datasets)}]")
    p.add_argument("--arms", nargs="+", choices=list(BASE_ARMS) + list(RECIPES),
                   help="random; mae (default recipe); mae_fast (fast pretraining); or a "
                        f"recipe of the ablation: {', '.join(RECIPES)} "
                        f"[{' '.join(q.arms)} / {' '.join(f.arms)}]")
    p.add_argument("--pretrain-fast", action="store_true",
                   help="add the arm mae_fast: an MAE pretrained with the fast encoder "
                        "(visible tokens only, training/models/mae_fast.py); needs a token "
                        "grid the window divides at every stage (e.g. --window-size 2 at 64 px)")
    p.add_argument("--fractions", type=float, nargs="+",
                   help=f"fractions of the labelled pool (nested subsets) [{q.fractions}]")
    p.add_argument("--seeds", type=int, nargs="+",
                   help=f"seeds: label subsets, fine-tuning init and order [{q.seeds} / "
                        f"{f.seeds}]")
    p.add_argument("--phantoms", choices=sorted(VARIATIONS),
                   help=f"phantom variation [{q.phantoms}]")
    for name, what in (("pretrain", "unlabelled pretraining pool"), ("labeled", "labelled pool"),
                       ("val", "validation set"), ("test", "test set")):
        p.add_argument(f"--{name}-seed", type=int,
                       help=f"phantom seed of the {what} (seeds must differ) "
                            f"[{getattr(q, name + '_seed')}]")
    for name, field_ in (("n-unlabeled", "n_unlabeled"), ("n-labeled", "n_labeled"),
                         ("n-val", "n_val"), ("n-test", "n_test")):
        p.add_argument(f"--{name}", type=int, help=f"phantoms: {field_[2:]} images "
                       f"[{getattr(q, field_)} / {getattr(f, field_)}]")
    p.add_argument("--preset", help=f"architecture [{q.preset} / {f.preset}]")
    p.add_argument("--input-size", type=int, help=f"model input side in px [{q.input_size} / "
                                                  f"{f.input_size}]")
    p.add_argument("--window-size", type=int, help="attention window (default: the preset's)")
    p.add_argument("--pretrain-steps", type=int, help=f"MAE pretraining steps "
                   f"[{q.pretrain_steps} / {f.pretrain_steps}]")
    p.add_argument("--pretrain-batch", type=int, help=f"MAE batch size [{q.pretrain_batch} / "
                                                      f"{f.pretrain_batch}]")
    p.add_argument("--pretrain-lr", type=float, help=f"MAE peak lr [{q.pretrain_lr}]")
    p.add_argument("--mask-unit", type=int, help=f"MAE mask unit in px [{q.mask_unit} / "
                                                 f"{f.mask_unit}]")
    p.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction,
                   help=f"MAE per-patch normalised targets [{q.norm_pix_loss}]")
    p.add_argument("--pretrain-augment", action=argparse.BooleanOptionalAction,
                   help=f"MAE per-sample augmentation (PretrainAugment) [{q.pretrain_augment}]")
    p.add_argument("--finetune-steps", type=int, help=f"optimizer steps per fine-tuning run "
                   f"[{q.finetune_steps} / {f.finetune_steps}]")
    p.add_argument("--batch-size", type=int, help=f"fine-tuning batch [{q.finetune_batch} / "
                                                  f"{f.finetune_batch}]")
    p.add_argument("--lr", type=float, help=f"fine-tuning peak lr [{q.finetune_lr}]")
    p.add_argument("--evals", type=int, help=f"validations per run; the best is tested "
                                             f"[{q.evals} / {f.evals}]")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the outputs from the finished runs in --work")
    p.add_argument("--device", help="cpu, cuda, ... [cpu]")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    return p


def config_from_args(args):
    base = QUICK if args.quick else FULL
    changes = {}
    for opt, field_ in FIELDS.items():
        v = getattr(args, opt)
        if v is not None:
            changes[field_] = tuple(v) if isinstance(v, list) else v
    cfg = dataclasses.replace(base, **changes)
    if args.pretrain_fast and "mae_fast" not in cfg.arms:
        cfg = dataclasses.replace(cfg, arms=tuple(cfg.arms) + ("mae_fast",))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    from training.data.datasets import CSVDataset, DataError
    from training.finetune.cli import setup_runtime
    from training.finetune.label_efficiency.report import summarize
    from training.finetune.label_efficiency.study import run_study
    from training.weights.checkpoint import read_model_card

    args = build_parser().parse_args(argv)
    setup_runtime(args)
    t0 = time.perf_counter()
    try:
        cfg = config_from_args(args)
        data, task_cfg = None, {}
        if args.train_csv:
            if not (args.test_csv and args.num_classes and args.init):
                raise DataError("with --train-csv give --test-csv, --num-classes and --init")
            prep = read_model_card(args.init).prep
            if args.modality:
                prep = dataclasses.replace(prep, modality=args.modality)
            mk = lambda p: CSVDataset(p, "segmentation", prep, modality=args.modality)  # noqa
            data = {"pool": mk(args.train_csv), "test": mk(args.test_csv),
                    "val": mk(args.val_csv) if args.val_csv else None}
            from training.weights.card import default_classes
            task_cfg["classes"] = default_classes(args.num_classes, "segmentation")
        rows = run_study(cfg, args.out, args.work, args.init, data, task_cfg,
                         report_only=args.report_only)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for ds in sorted({r["dataset"] for r in rows}):
        for arm, pts in summarize(rows, dataset=ds).items():
            print(f"{ds} {arm}".ljust(22), "  ".join(f"{p[0]:g}%: {p[1]:.3f}±{p[2]:.3f}"
                                                    for p in pts))
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {Path(args.out)}")
    return 0
