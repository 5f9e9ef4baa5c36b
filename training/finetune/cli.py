"""The fine-tuning command line (``python -m training.finetune``); argument groups shared with
``python -m training.evaluate``."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from training.data.datasets import (
    ArrayDataset,
    CSVDataset,
    DataError,
    SliceDataset,
    VolumeFolderDataset,
)
from training.data.preprocessing import Preprocessing
from training.finetune.engine import MODES, FinetuneConfig, build_finetune_model
from training.finetune.recipe import (
    PRETRAINED_DEFAULT,
    RESCALES,
    TRANSFERS,
    build_for_config,
    is_random_init,
    resolve,
)
from training.finetune.runner import finetune, make_classes
from training.runtime.atomic import check_writable
from training.runtime.device import default_device_name, flush_denormals
from training.runtime.progress import ensure_logging
from training.runtime.threads import THREADS_HELP, configure_threads


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
                   help="use N synthetic CT phantoms (training.data.synthetic) instead of files: "
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
                   help="CT window in HU for every image (default: the card's; 40 400 "
                        "without one)")
    g.add_argument("--percentile-scope", choices=("slice", "volume"),
                   help="non-CT images: percentiles over each slice or each volume")
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
                   help="same as --transfer encoder")
    g = p.add_argument_group("recipe for pretrained inits (training.finetune.recipe; defaults "
                             "chosen by docs/label_efficiency.md; ignored for --init random)")
    g.add_argument("--transfer", choices=TRANSFERS,
                   help="what the init gives: 'full' = encoder and decoder (the paper's official "
                        f"code), 'encoder' = encoder only, fresh decoder (default "
                        f"{PRETRAINED_DEFAULT.transfer})")
    g.add_argument("--rescale", choices=RESCALES,
                   help="'std': rescale each transferred weight matrix to the std of the fresh "
                        "fine-tuning init (MAE weights are 2-6x larger); 'none': keep them "
                        f"(default {PRETRAINED_DEFAULT.rescale})")
    g.add_argument("--layer-decay", type=float,
                   help="layer-wise lr decay: encoder block k of L gets lr*d^(L-k), patch "
                        f"embedding lr*d^L, decoder lr; 1 = off (default "
                        f"{PRETRAINED_DEFAULT.layer_decay})")
    g.add_argument("--freeze-encoder-steps", type=int,
                   help="train only the decoder and head for the first N steps, then all "
                        f"(default {PRETRAINED_DEFAULT.freeze_encoder_steps})")
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
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training set")
    g.add_argument("--steps-per-epoch", type=int, help="fixed steps per epoch (small datasets "
                   "are recycled); default: one pass over the data")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (absolute)")
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="final learning rate")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW weight decay (not on norms and biases)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear learning-rate warm-up, in epochs (then cosine decay)")
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
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed of initialisation, order, augmentation and hold-out split")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default=default_device_name(),
                   help="cpu, cuda, cuda:N or mps (default: cuda where a GPU is present)")
    g.add_argument("--threads", type=int, help=THREADS_HELP)
    g.add_argument("--cache-mb", type=float, default=d.cache_mb,
                   help="memory for prepared (model-resolution) training and validation slices, "
                        "in MiB; each is prepared once (0: prepare every slice at every use)")
    if not for_cv:
        g.add_argument("--out", required=True, help="output folder: best/ and last/ checkpoints, "
                       "log.jsonl, train_state.pt, summary.json")
        g.add_argument("--name", help="model name for the model card")
        g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar or per-epoch lines (errors are still printed)")


def setup_runtime(args=None) -> None:
    """Flush denormals (they slow CPU kernels up to 10x), set the thread count, log plainly."""
    configure_threads(getattr(args, "threads", None))
    flush_denormals("cpu")
    ensure_logging()


def prep_from_args(args, base: Preprocessing | None) -> Preprocessing:
    """The model card's preprocessing (or the default), with command-line overrides."""
    return prep_and_origin(args, base, "")[0]


def prep_and_origin(args, base: Preprocessing | None, parent: str) -> tuple[Preprocessing, dict]:
    """-> (preprocessing, its origin for the model card): the parent's card (``inherited``) or
    the default (random init), and every field the command line overrode."""
    prep = _prep_with_overrides(args, base)
    origin = {"from": f"parent: {parent}" if base is not None else "default (no parent card)",
              "overridden": {k: {"parent" if base is not None else "default": a, "used": b}
                             for k, (a, b) in prep.changes_from(base or Preprocessing()).items()}}
    return prep, origin


def _prep_with_overrides(args, base: Preprocessing | None) -> Preprocessing:
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
    if getattr(args, "percentile_scope", None):
        changes["percentile_scope"] = args.percentile_scope
    if getattr(args, "synthetic", None) and not args.modality:
        changes["modality"] = "CT"
    return dataclasses.replace(prep, **changes) if changes else prep


def class_info(args, task: str, num_classes: int | None):
    """-> (class names or None, colours or None) from the arguments (synthetic data: its
    classes)."""
    names, colors = getattr(args, "class_names", None), getattr(args, "class_colors", None)
    if getattr(args, "synthetic", None) and not names:
        from training.data.synthetic import CLASSES, CLS_CLASSES
        src = CLASSES if task == "segmentation" else CLS_CLASSES
        names, colors = [c["name"] for c in src], colors or [c["color"] for c in src]
    return names, colors


def datasets_from_args(args, task: str, prep: Preprocessing, num_classes: int | None,
                       purpose: str = "train") -> dict[str, SliceDataset]:
    """{'train', 'val'} (purpose train/cv) or {'test'} (purpose evaluate) datasets."""
    from training.data.datasets import fold_csv_paths
    from training.data.splits import holdout_split

    names = getattr(args, "class_names", None)
    sources = sum(bool(x) for x in (args.csv_dir, args.train_csv or args.test_csv, args.images,
                                    args.synthetic))
    if sources != 1:
        raise DataError("give exactly one data source: --csv-dir, --train-csv/--test-csv, "
                        "--images (+ --labels) or --synthetic")
    out: dict[str, SliceDataset] = {}
    if args.synthetic:
        from training.data.synthetic import make_classification_set, make_slices
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
    cfg = FinetuneConfig(
        task=args.task, num_classes=infer_num_classes(args, args.task), mode=args.mode,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, augment=not args.no_augment, ce_weight=args.ce_weight,
        dice_weight=args.dice_weight, dice_denominator=args.dice_denominator,
        grad_clip=args.grad_clip, seed=args.seed, device=args.device, val_every=args.val_every,
        cache_mb=getattr(args, "cache_mb", FinetuneConfig.cache_mb),
        transfer="encoder" if args.encoder_only else args.transfer, rescale=args.rescale,
        layer_decay=args.layer_decay, freeze_encoder_steps=args.freeze_encoder_steps)
    return resolve(cfg, pretrained=not is_random_init(args.init))  # the recipe, in the card


def make_model_factory(args, cfg: FinetuneConfig):
    """-> (factory() -> (model, finetune-kwargs), preprocessing) for the CLI and CV."""
    _, _, parent_prep, parent_name = build_finetune_model(cfg.task, cfg.num_classes, args.init,
                                                          args.preset)
    prep, origin = prep_and_origin(args, parent_prep, parent_name)
    names, colors = class_info(args, cfg.task, cfg.num_classes)
    classes = make_classes(names, cfg.num_classes, cfg.task, colors)

    def factory():
        torch.manual_seed(cfg.seed)
        model, report, _, parent, _ = build_for_config(cfg, args.init, args.preset)
        return model, {"classes": classes, "parent": parent,
                       "transfer": report.to_dict() if report else None,
                       "progress": not args.no_progress, "preprocessing_origin": origin}

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
        check_writable(args.out, "--out folder")  # before any work, not after training
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
        origin = meta["preprocessing_origin"]
        print(f"preprocessing ({origin['from']}"
              + (f"; overridden: {', '.join(origin['overridden'])}" if origin["overridden"]
                 else "") + f"): {prep.describe()}", file=sys.stderr)
        data = datasets_from_args(args, cfg.task, prep, cfg.num_classes, purpose="train")
        if meta["transfer"]:
            print(f"recipe: transfer {cfg.transfer}, rescale {cfg.rescale}, layer decay "
                  f"{cfg.layer_decay}, encoder frozen for {cfg.freeze_encoder_steps} steps",
                  file=sys.stderr)
        summary = finetune(model, data["train"], data.get("val"), cfg, args.out,
                           name=args.name or Path(args.out).name, resume=args.resume, **meta)
    except (DataError, ValueError, FileExistsError, FileNotFoundError, FloatingPointError,
            PermissionError) as e:
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
