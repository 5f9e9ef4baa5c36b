"""The interactive promise, measured: a simulated user corrects ``k`` slices of a held-out volume
with the truth, the GUI's fine-tune job runs on them, and the new model is scored on the slices
the user did NOT correct.

    python -m training.interactive.simulate --quick --out docs/simulated_user/
    python -m training.interactive.simulate --out docs/simulated_user/      # the committed run
    python -m training.interactive.simulate --full --device cuda --out runs/simuser/   # GPU

Per dataset (synthetic phantoms, the MNI152 brain; :mod:`training.interactive.simulate_data`)
and starting point (``mae``: segmenter fine-tuned from an MAE pretrained on the unlabelled pool;
``random``: the same recipe from random init), for each benchmark seed, selection rule
(``even``: evenly spaced with a seeded phase; ``active``: most uncertain first, ranked by
:mod:`training.interactive.active_learning` with the starting model), mode (``decoder``,
``full``) and ``k``:

1. the user's labels layer is the starting model's prediction, with the truth painted on the
   ``k`` chosen slices, which are marked corrected and autosaved
   (:class:`training.interactive.autosave.Autosave`), as in the napari plugin;
2. the job is written with :func:`training.interactive.finetune.write_job` and run by
   :func:`training.interactive.finetune.run_job` -- the function the Fine-tune widget's child
   process runs -- with the widget's defaults (150 steps, batch 4, the mode's learning rate) and
   validation ``none`` (the widget's ``auto`` only adds a k-fold estimate; the saved weights are
   the same, at a quarter of the cost);
3. the new version is loaded from the version store and segments the uncorrected slices with
   :func:`training.interactive.inference.segment_steps` (the Segment widget's engine); Dice per
   class pooled over those slices, mean over the volume's foreground classes.

Rows are appended to ``simulated_user.csv`` as they finish; a rerun skips the rows it has
(same settings), so a cut-off run keeps its results. Then ``simulated_user.json`` (settings,
targets, corrected slices needed to reach them) and ``simulated_user.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from training.runtime.threads import THREADS_HELP, configure_threads

if __name__ == "__main__":  # passive OpenMP waiting and the thread count before torch loads
    configure_threads(argv=sys.argv[1:])

import numpy as np  # noqa: E402

from training.interactive import simulate_report as report  # noqa: E402
from training.runtime.progress import Progress, ensure_logging  # noqa: E402

KS = (1, 2, 3, 5, 10)
MODES = ("decoder", "full")
STARTS = ("mae", "random")
SELECTIONS = ("even", "active")


@dataclass
class SimConfig:
    datasets: tuple[str, ...] = ("phantom", "mni152")
    starts: tuple[str, ...] = STARTS
    modes: tuple[str, ...] = MODES
    ks: tuple[int, ...] = KS
    seeds: tuple[int, ...] = (0, 1, 2)
    selections: tuple[str, ...] = ("even", "active")
    preset: str = "small"
    input_size: int = 64
    phantoms: str = "hard"
    n_unlabeled: int = 1200  # phantoms for the MAE
    n_small: int = 10  # labelled phantoms of the starting model
    n_small_mni: int = 8  # labelled MNI 'train' slices of the starting model
    n_pool: int = 200  # labelled phantoms of the full-supervision reference
    n_val: int = 24
    volume_slices: int = 32
    volume_size: int = 128
    pretrain_steps: int = 600
    pretrain_batch: int = 16
    start_steps: int = 240  # starting model and reference: optimizer steps, batch, lr
    start_batch: int = 8
    start_lr: float = 1e-3
    session_steps: int = 150  # the Fine-tune widget's defaults
    session_batch: int = 4
    fixed_targets: tuple[float, ...] = (0.8, 0.85, 0.9)  # Dice targets besides full supervision
    device: str = "cpu"

    def key(self) -> str:
        """What the rows depend on (a rerun with other settings must not mix rows)."""
        d = dataclasses.asdict(self)
        for k in ("datasets", "starts", "modes", "ks", "seeds", "selections", "fixed_targets",
                  "device"):
            d.pop(k)
        import hashlib
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


QUICK = SimConfig(seeds=(0, 1, 2), selections=("even",), preset="tiny", n_unlabeled=400,
                  pretrain_steps=200, start_steps=100, session_steps=40, volume_slices=24,
                  volume_size=96)
FULL = SimConfig(seeds=tuple(range(5)), input_size=128, n_unlabeled=4000, pretrain_steps=4000,
                 pretrain_batch=64, start_steps=1000, n_pool=400, volume_size=256)


# -- the simulated user ------------------------------------------------------------------------
def choose_slices(n: int, k: int, selection: str, seed: int, ranking=None) -> list[int]:
    """The ``k`` slices the user corrects: ``even`` (evenly spaced, phase set by ``seed``) or
    ``active`` (the first ``k`` of ``ranking``, most uncertain first)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the volume's slices), got {k}")
    if selection == "active":
        return sorted(int(i) for i in ranking[:k])
    if selection != "even":
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    phase = np.random.default_rng([seed, 41]).uniform(0.15, 0.85)
    return sorted({min(n - 1, int((i + phase) * n / k)) for i in range(k)})


def user_labels(prediction: np.ndarray, truth: np.ndarray, corrected) -> np.ndarray:
    """The labels layer after the user's corrections: the prediction, with the truth on the
    corrected slices only."""
    labels = np.array(prediction, np.uint8, copy=True)
    idx = list(corrected)
    labels[idx] = truth[idx]
    return labels


def score_uncorrected(pred: np.ndarray, truth: np.ndarray, corrected, classes) -> dict:
    """Dice per foreground class pooled over the slices NOT in ``corrected`` (only the classes in
    ``classes``), and their mean; the scored slice indices too."""
    from training.finetune.metrics import confusion_matrix_labels, overlap_from_confusion

    keep = [i for i in range(truth.shape[0]) if i not in set(int(c) for c in corrected)]
    if not keep:
        raise ValueError("every slice is corrected: nothing left to score")
    nc = max(int(max(classes)) + 1, int(truth.max()) + 1, int(pred.max()) + 1)
    dice = overlap_from_confusion(confusion_matrix_labels(pred[keep], truth[keep], nc))["dice"]
    per = {int(c): float(dice[c]) for c in classes}
    return {"dice": float(np.mean(list(per.values()))), "per_class": per, "scored": keep}


def correct_and_finetune(base: Path, image, truth, prediction, corrected, mode: str, seed: int,
                         cfg: SimConfig, work: Path, modality, window) -> Path:
    """Paint the truth on ``corrected``, autosave, run the GUI's fine-tune job; -> the new
    version's folder."""
    from training.interactive.autosave import Autosave
    from training.interactive.corrections import CorrectionSet
    from training.interactive.finetune import run_job, write_job
    from training.interactive.session import SessionConfig

    cs = CorrectionSet(image, user_labels(prediction, truth, corrected), corrected=corrected,
                       modality=modality, window=window)
    path = Autosave(work / "autosave").save(cs)
    scfg = SessionConfig(mode=mode, steps=cfg.session_steps, batch_size=cfg.session_batch,
                         device=cfg.device, validation="none", seed=seed)
    write_job(work / "job", base, work / "versions", scfg.to_dict(),
              [{"autosave": path, "image": image, "slices": cs.training_slices(),
                "key": cs.key, "modality": modality, "window": list(window) if window else None}])
    result = run_job(work / "job", lambda ev: None)
    if result["status"] != "done" or not result["entry"]:
        raise RuntimeError(f"the fine-tune job ended {result['status']}: {result['message']}")
    return Path(result["entry"])


def segment(model_dir: Path, image, slices=None, device="cpu", ranking=False):
    """The Segment widget's engine on ``image``; ``ranking``: also the active-learning order."""
    from training.interactive.active_learning import rank_slices
    from training.interactive.inference import run, segment_steps
    from training.weights.checkpoint import load_checkpoint, read_model_card

    model, _ = load_checkpoint(model_dir, device="cpu")
    card = read_model_card(model_dir)
    if ranking:
        r = rank_slices(model, card, image, device=device)
        return r.result.labels, r.slices
    return run(segment_steps(model, card, image, slices=slices, device=device)).labels, None


def _one_seed(cfg, sel_, seed, data, meta, rows, done, work, csv_path, bar, progress):
    """The rows of one selection rule and seed (the reference's too), skipping done ones."""
    from training.interactive import simulate_data as models

    key = cfg.key()
    for dname in cfg.datasets:
        if dname not in data:
            data[dname] = ds = models.load_data(dname, cfg)
            meta["data"][dname] = ds.describe
            meta["starting_models"][dname], meta["recipe"] = models.prepare_models(
                ds, cfg, work / dname, progress)
        ds = data[dname]
        image, truth = ds.volume(seed)
        if max(cfg.ks) >= len(image):
            raise ValueError(f"k up to {max(cfg.ks)}, but the {dname} volume has "
                             f"{len(image)} slices: some must stay uncorrected")
        classes = sorted(int(c) for c in np.unique(truth) if c > 0)
        for start in [*cfg.starts, "reference"]:
            base = work / dname / start
            wanted = [(sel_, mode, k) for mode in cfg.modes for k in (0, *cfg.ks)] \
                if start != "reference" else [("all", "none", 0)]
            todo = [w for w in wanted if report.row_key(
                {"dataset": dname, "start": start, "selection": w[0], "mode": w[1],
                 "k": w[2], "seed": seed}) not in done]
            if not todo:
                continue
            pred, ranking = segment(base, image, device=cfg.device,
                                    ranking=sel_ == "active" and start != "reference")
            for sel, mode, k in todo:
                row = {"dataset": dname, "start": start, "selection": sel, "mode": mode,
                       "k": k, "seed": seed, "config": key}
                corrected = choose_slices(len(image), k, sel, seed, ranking) if k else []
                start_score = score_uncorrected(pred, truth, corrected, classes)
                t1 = time.perf_counter()
                if k:
                    shutil.rmtree(work / "session", ignore_errors=True)
                    new = correct_and_finetune(base, image, truth, pred, corrected, mode,
                                               seed, cfg, work / "session", ds.modality,
                                               ds.window)
                    after, _ = segment(new, image, slices=start_score["scored"],
                                       device=cfg.device)
                    score = score_uncorrected(after, truth, corrected, classes)
                    shutil.rmtree(work / "session", ignore_errors=True)
                else:
                    score = start_score
                row.update(report.row_values(score, start_score, corrected, ds.classes,
                                             time.perf_counter() - t1))
                rows.append(row)
                done.add(report.row_key(row))
                report.write_rows(csv_path, rows)
                if k:
                    bar.update(1, dice=row["dice"])
                if progress:
                    print(f"{dname} {start} {sel} {mode} k={k} seed {seed}: Dice "
                          f"{row['dice']:.3f} (start {row['start_dice']:.3f})",
                          file=sys.stderr, flush=True)


# -- the run -----------------------------------------------------------------------------------
def run_benchmark(cfg: SimConfig, out: str | Path, work: str | Path | None = None,
                  progress: bool = True) -> list[dict]:
    """Run every missing row (appending to the CSV), then write the JSON and the plot."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work else out / "_work"
    csv_path = out / "simulated_user.csv"
    key = cfg.key()
    rows = report.read_rows(csv_path)
    other = {r["config"] for r in rows} - {key}
    if other:
        raise ValueError(f"{csv_path} holds rows of other settings ({', '.join(sorted(other))}"
                         f"; these are {key}): use another --out or --restart")
    done = {report.row_key(r) for r in rows}
    t0 = time.perf_counter()
    meta: dict = {"config": dataclasses.asdict(cfg), "config_key": key, "data": {},
                  "starting_models": {}, "recipe": None}
    n_runs = (len(cfg.seeds) * len(cfg.datasets) * len(cfg.starts) * len(cfg.selections)
              * len(cfg.modes) * len(cfg.ks))
    bar = Progress(n_runs, "simulated user", unit="run", enabled=progress)
    bar.update(sum(1 for r in rows if int(r["k"]) > 0))
    data = {}
    # the whole grid of the first selection rule before the next, and within one rule seeds
    # outermost: a cut-off run has whole seeds everywhere
    for sel_ in cfg.selections:
        for seed in cfg.seeds:
            _one_seed(cfg, sel_, seed, data, meta, rows, done, work, csv_path, bar, progress)
            report.write_outputs(out, rows, cfg, meta, time.perf_counter() - t0)
    bar.close()
    report.write_outputs(out, rows, cfg, meta, time.perf_counter() - t0)
    return rows


def report_only(cfg: SimConfig, out: str | Path) -> list[dict]:
    """Rewrite the outputs from the rows (and the settings) of an earlier run in ``out``."""
    out = Path(out)
    rows = report.read_rows(out / "simulated_user.csv")
    if not rows:
        raise FileNotFoundError(f"{out / 'simulated_user.csv'}: no rows to report")
    meta_path = out / "simulated_user.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    keep = ("config", "config_key", "data", "starting_models", "recipe")
    meta = {k: meta[k] for k in keep if k in meta}
    report.write_outputs(out, rows, cfg, meta, 0.0)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.interactive.simulate",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="folder for simulated_user.{csv,json,png} (rows are appended)")
    p.add_argument("--work", type=Path, help="folder for models and jobs (default OUT/_work)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="tiny models, short training: about 20 min on 2 CPU cores")
    size.add_argument("--full", action="store_true",
                      help="128 px, longer pretraining, 5 seeds: for a GPU (--device cuda)")
    p.add_argument("--restart", action="store_true",
                   help="discard the rows already in OUT instead of continuing them")
    p.add_argument("--datasets", nargs="+", choices=("phantom", "mni152"),
                   help="held-out volumes to correct (default: both)")
    p.add_argument("--starts", nargs="+", choices=STARTS, help="starting points (default: both)")
    p.add_argument("--modes", nargs="+", choices=MODES, help="fine-tune modes (default: both)")
    p.add_argument("--ks", nargs="+", type=int, help=f"corrected slices (default {KS})")
    p.add_argument("--seeds", nargs="+", type=int,
                   help="benchmark seeds: phantom volume, slice phase, fine-tune seed")
    p.add_argument("--selections", nargs="+", choices=SELECTIONS,
                   help="which slices the user corrects (default: even and active; --quick even)")
    p.add_argument("--session-steps", type=int, help="fine-tune steps per correction run "
                   "(default: the widget's 150; --quick 40)")
    p.add_argument("--targets", nargs="+", type=float,
                   help="fixed Dice targets reported besides the full-supervision one "
                        "(default 0.8 0.85 0.9)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the JSON, table and plot from OUT's rows; run nothing")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    return p


def main(argv=None) -> int:
    from training.finetune.cli import setup_runtime

    args = build_parser().parse_args(argv)
    setup_runtime(args)
    ensure_logging()
    cfg = QUICK if args.quick else FULL if args.full else SimConfig()
    over = {"datasets": args.datasets, "starts": args.starts, "modes": args.modes,
            "ks": args.ks, "seeds": args.seeds, "selections": args.selections,
            "session_steps": args.session_steps, "fixed_targets": args.targets}
    cfg = dataclasses.replace(cfg, device=args.device, **{
        k: tuple(v) if isinstance(v, list) else v for k, v in over.items() if v is not None})
    if not cfg.ks or min(cfg.ks) < 1:
        print(f"error: --ks must be >= 1 (k = 0, the starting model, is always measured), got "
              f"{list(cfg.ks)}", file=sys.stderr)
        return 2
    if args.restart:
        (args.out / "simulated_user.csv").unlink(missing_ok=True)
    try:
        rows = report_only(cfg, args.out) if args.report_only else \
            run_benchmark(cfg, args.out, args.work)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.text_summary(rows, json.loads((args.out / "simulated_user.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
