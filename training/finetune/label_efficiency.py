"""The paper's label-efficiency protocol (Fig. 2/3): Dice vs. fraction of labelled data,
MAE-pretrained initialisation vs. random initialisation.

    python -m training.label_efficiency --quick --out docs/
    python -m training.label_efficiency --init mae_ckpt/ --train-csv train.csv \\
        --test-csv test.csv --num-classes 5 --out study/

For each label fraction (5, 10, 25, 50, 80, 100 %) a nested, seeded subset of
the labelled pool (:func:`training.data.splits.label_fraction_subsets`) fine-tunes
(a) from the MAE weights and (b) from random init, with the *same* number of
optimizer steps for every fraction (small subsets are recycled) and model
selection on a fixed validation set; each model is scored on one fixed
held-out test set. Outputs ``label_efficiency.csv``, ``label_efficiency.png``
and ``label_efficiency.json`` (settings and runtime).

``--quick`` does everything on synthetic CT phantoms (:mod:`training.data.synthetic`)
on a CPU: it pretrains a small Swin MAE on unlabelled phantoms with
:func:`pretrain_quick`, then runs the protocol (about 10-15 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.data.preprocessing import Preprocessing, to_model_input
from training.data.synthetic import VARIATIONS
from training.runtime.atomic import atomic_write_text
from training.runtime.progress import Progress
from training.runtime.threads import THREADS_HELP, configure_threads

FRACTIONS = (0.05, 0.10, 0.25, 0.50, 0.80, 1.00)


@dataclass
class StudyConfig:
    preset: str = "small"
    input_size: int = 64
    fractions: tuple[float, ...] = FRACTIONS
    seeds: tuple[int, ...] = (0,)
    # synthetic data (quick): phantom seeds of each pool (disjoint cases when they differ),
    # and their variation (training.data.synthetic.VARIATIONS: "standard", "hard")
    pretrain_seed: int = 1
    labeled_seed: int = 2
    val_seed: int = 3
    test_seed: int = 4
    phantoms: str = "standard"
    n_unlabeled: int = 1200
    n_labeled: int = 200
    n_val: int = 24
    n_test: int = 100
    pretrain_steps: int = 1000
    pretrain_batch: int = 16
    pretrain_lr: float = 1.5e-3
    # fine-tuning (identical for both initialisations and every fraction)
    finetune_steps: int = 160
    finetune_batch: int = 8
    finetune_lr: float = 1e-3
    evals: int = 4  # validations per run (the best by val Dice is tested)
    threads: int | None = None
    extra: dict = field(default_factory=dict)


QUICK = StudyConfig()


def pretrain_quick(model, images: torch.Tensor, steps: int, prep: Preprocessing,
                   batch_size: int = 16, lr: float = 1.5e-3, warmup: int | None = None,
                   seed: int = 0, device="cpu", progress: bool = False) -> list[float]:
    """A minimal MAE pretraining loop (for the quick study; ``training.pretrain`` is the real one).

    ``images``: (N, 1, S, S) in [0, 1]. Random horizontal flips, AdamW (0.9, 0.95),
    warm-up + cosine, the model's own random window masking. Returns the losses.
    """
    from training.runtime.device import flush_denormals
    from training.runtime.optim import WarmupCosine, build_optimizer

    flush_denormals(device)
    model.to(device).train()
    opt = build_optimizer(model, lr, 0.05)
    sched = WarmupCosine(opt, steps, warmup if warmup is not None else max(1, steps // 10))
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    order: list[int] = []
    losses = []
    bar = Progress(steps, "MAE pretraining", unit="step", enabled=progress)
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(n, generator=g).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        x = images[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x).to(device)
        loss, _, _ = model(to_model_input(x, prep), generator=None)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MAE loss became {loss.item()}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(1, loss=losses[-1])
    bar.close()
    model.eval()
    return losses


def _run_one(init: str | None, preset: str, train, val, test, cfg_ft, classes, names):
    from training.finetune.engine import build_finetune_model, predict_and_score

    torch.manual_seed(cfg_ft.seed)
    model, report, _, parent = build_finetune_model(cfg_ft.task, cfg_ft.num_classes, init, preset)
    t0 = time.perf_counter()
    best_state = None
    for ev in _events(model, train, val, cfg_ft, names):
        if ev["kind"] == "epoch" and ev.get("is_best"):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    res = predict_and_score(model, test, cfg_ft.task, test.prep, 32, cfg_ft.device,
                            class_names=names)
    return res, seconds, report


def _events(model, train, val, cfg_ft, names):
    from training.finetune.engine import finetune_steps
    yield from finetune_steps(model, train, val, cfg_ft, class_names=names)


def run_study(cfg: StudyConfig, out_dir: str | Path, work_dir: str | Path | None = None,
              mae_init: str | None = None, data: dict | None = None, task_cfg: dict | None = None,
              progress: bool = True) -> list[dict]:
    """Run the protocol; writes CSV/PNG/JSON into ``out_dir`` and returns the table rows.

    ``data``: {'pool', 'val', 'test'} datasets (default: synthetic phantoms).
    ``mae_init``: an MAE checkpoint; default: pretrain one with :func:`pretrain_quick`.
    """
    from training.data.datasets import ArrayDataset
    from training.data.splits import label_fraction_subsets
    from training.data.synthetic import CLASSES, make_slices
    from training.finetune.engine import FinetuneConfig
    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint

    t_start = time.perf_counter()
    if cfg.threads:
        configure_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir else out / "_work"
    prep = Preprocessing(input_size=cfg.input_size, modality="CT", ct_window=(40.0, 400.0))
    meta: dict = {"config": dataclasses.asdict(cfg), "torch_threads": torch.get_num_threads()}
    task_cfg = dict(task_cfg or {})
    classes = task_cfg.pop("classes", CLASSES)
    names = [c["name"] for c in classes]
    if data is None:
        # disjoint seeds (default): unlabelled 1, labelled pool 2, validation 3, test 4
        seeds = (cfg.pretrain_seed, cfg.labeled_seed, cfg.val_seed, cfg.test_seed)
        if len(set(seeds[1:])) < 3 or (mae_init is None and cfg.pretrain_seed in seeds[1:]):
            raise ValueError(f"phantom seeds must differ (pretraining, labelled, validation, "
                             f"test: {seeds}): the same seed gives the same cases")
        kw = {"variation": cfg.phantoms}
        pool = ArrayDataset(*make_slices(cfg.n_labeled, cfg.labeled_seed, cfg.input_size, **kw),
                            prep=prep)
        val = ArrayDataset(*make_slices(cfg.n_val, cfg.val_seed, cfg.input_size, **kw), prep=prep)
        test = ArrayDataset(*make_slices(cfg.n_test, cfg.test_seed, cfg.input_size, **kw),
                            prep=prep)
        meta["data"] = ("synthetic CT phantoms (training.data.synthetic), "
                        f"{cfg.input_size}x{cfg.input_size}, classes {names}, "
                        f"variation {cfg.phantoms!r}, seeds pretraining/labelled/validation/"
                        f"test {'/'.join(map(str, seeds))}")
    else:
        pool, val, test = data["pool"], data.get("val"), data["test"]
        prep = pool.prep
        meta["data"] = {k: len(v) for k, v in data.items() if v is not None}
    if mae_init is None:
        imgs, _ = make_slices(cfg.n_unlabeled, cfg.pretrain_seed, cfg.input_size,
                              variation=cfg.phantoms)
        unl = ArrayDataset(imgs, None, prep=prep)
        unit = torch.stack([unl[i][0] for i in range(len(unl))])
        torch.manual_seed(0)
        mae = build_model("mae", cfg.preset)
        t0 = time.perf_counter()
        losses = pretrain_quick(mae, unit, cfg.pretrain_steps, prep, cfg.pretrain_batch,
                                cfg.pretrain_lr, progress=progress)
        meta["pretrain"] = {"steps": cfg.pretrain_steps, "seconds": time.perf_counter() - t0,
                            "loss_first_50": float(np.mean(losses[:50])),
                            "loss_last_50": float(np.mean(losses[-50:])),
                            "images": cfg.n_unlabeled}
        mae_init = str(save_checkpoint(mae, work / "mae", name="quick-study MAE",
                                       preprocessing=prep.to_dict(), overwrite=True,
                                       provenance={"data": "unlabelled synthetic phantoms",
                                                   "steps": cfg.pretrain_steps}))
    steps_per_epoch = max(1, cfg.finetune_steps // cfg.evals)
    rows = []
    for seed in cfg.seeds:
        subsets = label_fraction_subsets(len(pool), cfg.fractions, seed, pool.groups())
        for frac in cfg.fractions:
            train = pool.subset(subsets[frac])
            for init_name, init in (("mae", mae_init), ("random", None)):
                fcfg = FinetuneConfig(task="segmentation", num_classes=len(classes),
                                      epochs=cfg.evals, steps_per_epoch=steps_per_epoch,
                                      batch_size=cfg.finetune_batch, lr=cfg.finetune_lr,
                                      warmup_epochs=0.5, seed=seed, **task_cfg)
                res, secs, report = _run_one(init, cfg.preset, train, val, test, fcfg, classes,
                                             names)
                row = {"fraction": frac, "percent": round(frac * 100), "n_labeled": len(train),
                       "init": init_name, "seed": seed, "mean_dice": res["mean_dice"],
                       "mean_dice_pooled": res["mean_dice_pooled"],
                       "mean_precision": res["mean_precision"],
                       "mean_recall": res["mean_recall"]}
                for c in res["per_class"][1:]:
                    row[f"dice_{c['name']}"] = c["dice"]
                row["finetune_seconds"] = round(secs, 1)
                rows.append(row)
                if progress:
                    print(f"seed {seed} {row['percent']:3d}% ({len(train):4d} images) "
                          f"{init_name:6s}: Dice {row['mean_dice']:.4f} "
                          f"(pooled {row['mean_dice_pooled']:.4f}) in {secs:.0f} s",
                          file=sys.stderr, flush=True)
                _write_table(out / "label_efficiency.csv", rows)
    meta["seconds_total"] = round(time.perf_counter() - t_start, 1)
    meta["mae_init"] = str(mae_init)
    atomic_write_text(out / "label_efficiency.json", json.dumps(meta, indent=2) + "\n")
    plot(rows, out / "label_efficiency.png")
    return rows


def _write_table(path: Path, rows: list[dict]) -> None:
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k != "fraction" else v)
                    for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def summarize(rows: Sequence[dict], key: str = "mean_dice") -> dict:
    """{init: [(percent, mean, std, n), ...]} over seeds."""
    out: dict = {}
    for init in sorted({r["init"] for r in rows}):
        pts = []
        for pct in sorted({r["percent"] for r in rows}):
            v = [r[key] for r in rows if r["init"] == init and r["percent"] == pct]
            if v:
                pts.append((pct, float(np.mean(v)), float(np.std(v)), len(v)))
        out[init] = pts
    return out


def plot(rows: Sequence[dict], path: str | Path, key: str = "mean_dice") -> Path:
    """Dice vs. label fraction, one line per initialisation (mean ± std over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.runtime.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4))
    style = {"mae": ("#D55E00", "o", "MAE-pretrained init"),
             "random": ("#0072B2", "s", "random init")}
    for init, pts in summarize(rows, key).items():
        color, marker, label = style.get(init, ("gray", "x", init))
        x = [p[0] for p in pts]
        ax.errorbar(x, [p[1] for p in pts], yerr=[p[2] for p in pts], color=color,
                    marker=marker, capsize=3, label=label)
    ax.set_xlabel("labelled training data (%)")
    ax.set_ylabel("test Dice (mean over foreground classes)")
    ax.set_xticks(sorted({r["percent"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    n_seeds = len({r["seed"] for r in rows})
    ax.set_title(f"Label efficiency ({n_seeds} seed{'s' if n_seeds > 1 else ''})")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.label_efficiency",
        description="Label-efficiency study (paper Fig. 2/3): fine-tune segmentation from MAE "
                    "weights and from random init on nested 5-100% subsets of the labelled "
                    "data; score all on one held-out test set; write CSV + plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="synthetic phantoms, pretrain a small "
                   "MAE first; about 10-15 min on 2 CPU cores")
    p.add_argument("--out", required=True, help="folder for label_efficiency.{csv,png,json}")
    p.add_argument("--work", help="folder for intermediate checkpoints (default OUT/_work)")
    p.add_argument("--init", help="use this MAE checkpoint instead of pretraining one")
    p.add_argument("--train-csv", help="labelled pool (CSV image,mask); default: phantoms")
    p.add_argument("--val-csv", help="validation CSV for model selection")
    p.add_argument("--test-csv", help="fixed held-out test CSV")
    p.add_argument("--num-classes", type=int, help="classes incl. background (with CSVs)")
    p.add_argument("--modality", help="modality of the CSV images ('CT' applies the window)")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                   help="fractions of the labelled pool to fine-tune on (nested subsets)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="repeat the study with these seeds (label subsets, fine-tuning init and "
                        "order; the phantoms are set by --*-seed)")
    p.add_argument("--phantoms", default=QUICK.phantoms, choices=sorted(VARIATIONS),
                   help="phantom variation with --quick: 'hard' varies pose, scale, elastic "
                        "shape, organ contrast, noise and partial volume")
    for name, what in (("pretrain", "unlabelled pretraining pool"),
                       ("labeled", "labelled pool"), ("val", "validation set"),
                       ("test", "test set")):
        p.add_argument(f"--{name}-seed", type=int, default=getattr(QUICK, f"{name}_seed"),
                       help=f"phantom seed of the {what} with --quick (seeds must differ)")
    p.add_argument("--preset", default=QUICK.preset, help="architecture for random init "
                   "and the quick MAE")
    p.add_argument("--input-size", type=int, default=QUICK.input_size,
                   help="model input side in pixels (multiple of 32)")
    p.add_argument("--pretrain-steps", type=int, default=QUICK.pretrain_steps,
                   help="MAE pretraining steps of the quick study (without --init)")
    p.add_argument("--finetune-steps", type=int, default=QUICK.finetune_steps,
                   help="optimizer steps per fine-tuning run (same for every fraction)")
    p.add_argument("--batch-size", type=int, default=QUICK.finetune_batch,
                   help="fine-tuning batch size")
    p.add_argument("--lr", type=float, default=QUICK.finetune_lr,
                   help="fine-tuning peak learning rate")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.data.datasets import CSVDataset, DataError
    from training.finetune.cli import setup_runtime
    from training.weights.checkpoint import read_model_card

    args = build_parser().parse_args(argv)
    setup_runtime(args)
    cfg = dataclasses.replace(QUICK, fractions=tuple(args.fractions), seeds=tuple(args.seeds),
                              preset=args.preset, input_size=args.input_size,
                              pretrain_steps=args.pretrain_steps,
                              finetune_steps=args.finetune_steps,
                              finetune_batch=args.batch_size, finetune_lr=args.lr,
                              threads=args.threads, phantoms=args.phantoms,
                              pretrain_seed=args.pretrain_seed, labeled_seed=args.labeled_seed,
                              val_seed=args.val_seed, test_seed=args.test_seed)
    data, task_cfg = None, {}
    try:
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
        elif not args.quick:
            raise DataError("give --quick (synthetic) or --train-csv/--test-csv/--init")
        t0 = time.perf_counter()
        rows = run_study(cfg, args.out, args.work, args.init, data, task_cfg)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for init, pts in summarize(rows).items():
        print(init.ljust(7), "  ".join(f"{p[0]}%: {p[1]:.3f}" for p in pts))
    print(f"total {time.perf_counter() - t0:.0f} s; "
          f"wrote {Path(args.out) / 'label_efficiency.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
