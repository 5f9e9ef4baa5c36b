"""Rebuild the models shipped in ``napari_vismae/models/`` and measure them on held-out phantoms.

    python scripts/build_builtin_models.py [--work build/builtin] [--threads 2] [--quick]

1. **Unlabelled phantoms**: the 24 synthetic CT cases of seeds 1000-1023 (24 x 256 x 256,
   the cases ``scripts/ood_reference.py`` takes its reference from) plus ``--pretrain-slices``
   single slices of phantom seed ``--pretrain-seed``, written as 8-bit PNGs through the
   abdomen window 40/400.
2. **MAE pretraining** with the project's own ``python -m training.pretrain``: per-sample
   augmentation (random resized crop, rotation, flip, intensity jitter), 8-px mask units,
   per-patch normalised targets and the input-use check (its verdict goes into the cards).
3. **Segmenter, input size by measurement**: for every ``--seg-sizes`` candidate the same
   fine-tune recipe (encoder-only transfer from the MAE: the decoder starts fresh; AdamW,
   warm-up + cosine; training phantoms at 256 x 256 with the noise and blur of a 512 x 512
   phantom area-averaged to that size) is run, the fp16 checkpoint is saved and reloaded, and it is
   measured the way the plugin runs it: ``training.interactive.inference.segment_steps`` on
   held-out 512 x 512 phantom slices (different seeds), the model's logits upsampled to
   512 x 512, scored against the 512 x 512 truth -- mean foreground Dice, boundary F1 within
   1 px and the mean boundary distance in pixels -- and CPU seconds per 512 x 512 slice (one
   thread). The smallest size whose Dice is within ``--dice-tolerance`` of the best and whose
   boundary F1 is within ``--boundary-tolerance`` of the best is installed; the table and the
   rule go into the card (``provenance.input_size``) and are printed.
4. **Classifier** (liver lesion yes/no), fine-tuned from the same MAE and scored on
   ``--cls-test`` held-out slices (a different seed) at 512 x 512 through ``classify_steps``,
   ROC/PR AUC from ``training.finetune.metrics``. It is installed only if its held-out ROC
   AUC reaches ``--min-auc``; otherwise the build stops with an error (nothing half-written).
5. Install both as fp16 safetensors + model card (written atomically), then
   ``scripts/ood_reference.py`` adds the out-of-distribution reference.

Every seed is an option and is recorded in the cards; the same command gives the same
models on the same machine (CPU, same thread count). Stages whose output exists in
``--work`` are reused (delete the folder to start over). These are demonstration models for
synthetic phantoms, not clinical tools.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PACKAGE_MODELS = REPO / "napari_vismae" / "models"
CT_WINDOW = (40.0, 400.0)
RENDER = 512  # the side of the held-out test phantoms (what the plugin is shown)
STORE = 256  # the side of the training phantoms
SEG_DESCRIPTION = ("Demo model: abdominal organs (liver, spleen, kidney, bone) on synthetic CT "
                   "phantoms. Small VIS-MAE pretrained on synthetic phantoms. Not for clinical "
                   "use.")
CLS_DESCRIPTION = ("Demo model: liver lesion yes/no on synthetic CT phantoms. Small VIS-MAE "
                   "pretrained on synthetic phantoms. Not for clinical use.")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--work", type=Path, default=REPO / "build" / "builtin",
      help="working folder (phantoms, MAE run, candidate models, measurements); "
           "finished stages in it are reused (default: build/builtin)")
    a("--out", type=Path, default=PACKAGE_MODELS,
      help="where the chosen models are installed (default: napari_vismae/models)")
    a("--no-install", action="store_true",
      help="train and measure into --work only (e.g. one candidate size per process); a later "
           "run without it reuses those results and installs")
    a("--quick", action="store_true",
      help="a tiny run that checks the pipeline end to end (few steps and slices); installs "
           "nothing unless --out is given explicitly")
    a("--threads", type=int, default=2, help="CPU threads for training and inference "
                                             "(the speed column always uses one) (default: 2)")
    a("--model", default="small", help="model preset (default: small)")
    # pretraining
    a("--pretrain-cases", type=int, default=24,
      help="phantom volumes (seeds 1000, 1001, ...) in the unlabelled pool (default: 24)")
    a("--pretrain-seed", type=int, default=11,
      help="phantom seed of the extra unlabelled single slices (default: 11)")
    a("--pretrain-slices", type=int, default=600,
      help="extra unlabelled single slices (default: 600)")
    a("--pretrain-size", type=int, default=128, help="MAE input side (default: 128)")
    a("--pretrain-epochs", type=int, default=11,
      help="MAE epochs over the unlabelled pool (warm-up 0.5 epoch, then cosine to the end; "
           "11 x 73 = 803 steps at the defaults) (default: 11)")
    a("--pretrain-batch", type=int, default=16, help="MAE batch size (default: 16)")
    a("--pretrain-lr", type=float, default=1.5e-3, help="MAE peak learning rate (default: 1.5e-3)")
    # segmentation
    a("--seg-sizes", type=int, nargs="+", default=[128, 192, 256],
      help="candidate input sides of the segmenter (multiples of 32) (default: 128 192 256)")
    a("--seg-train-seed", type=int, default=21,
      help="phantom seed of the labelled training slices (default: 21)")
    a("--seg-train", type=int, default=800, help="labelled training slices (default: 800)")
    a("--seg-hard-seed", type=int, default=24,
      help="phantom seed of the extra 'hard' (pose/scale/elastic/contrast) training slices "
           "(default: 24)")
    a("--seg-hard", type=int, default=200,
      help="extra training slices of the 'hard' phantom variation (default: 200)")
    a("--seg-val-seed", type=int, default=22, help="validation phantom seed (default: 22)")
    a("--seg-val", type=int, default=24, help="validation slices (default: 24)")
    a("--seg-test-seed", type=int, default=23,
      help="held-out test phantom seed (default: 23)")
    a("--seg-test", type=int, default=32, help="held-out 512 x 512 test slices (default: 32)")
    a("--seg-steps", type=int, default=400, help="fine-tune steps per candidate (default: 400)")
    a("--seg-batch", type=int, default=8, help="fine-tune batch size (default: 8)")
    a("--seg-lr", type=float, default=1e-3, help="fine-tune peak learning rate (default: 1e-3)")
    a("--dice-tolerance", type=float, default=0.01,
      help="a size qualifies if its held-out Dice is within this of the best (default: 0.01)")
    a("--boundary-tolerance", type=float, default=0.02,
      help="... and its boundary F1 (1 px) within this of the best (default: 0.02)")
    # classification
    a("--cls-size", type=int, default=96, help="classifier input side (default: 96)")
    a("--cls-train-seed", type=int, default=31, help="classifier training seed (default: 31)")
    a("--cls-train", type=int, default=800, help="classifier training slices (default: 800)")
    a("--cls-val-seed", type=int, default=32, help="classifier validation seed (default: 32)")
    a("--cls-val", type=int, default=100, help="classifier validation slices (default: 100)")
    a("--cls-test-seed", type=int, default=33,
      help="classifier held-out test seed (default: 33)")
    a("--cls-test", type=int, default=240,
      help="classifier held-out 512 x 512 test slices (default: 240)")
    a("--cls-lesion-steps", type=int, default=300,
      help="steps of lesion segmentation (dense labels of the classifier's training slices) "
           "that train the classifier's encoder first; 0 = classify straight from the MAE "
           "(default: 300)")
    a("--cls-lesion-lr", type=float, default=1e-3,
      help="peak learning rate of the lesion segmentation step (default: 1e-3)")
    a("--cls-steps", type=int, default=300, help="classifier fine-tune steps (default: 300)")
    a("--cls-batch", type=int, default=16, help="classifier batch size (default: 16)")
    a("--cls-lr", type=float, default=5e-4, help="classifier peak learning rate (default: 5e-4)")
    a("--min-auc", type=float, default=0.9,
      help="held-out ROC AUC the classifier must reach to be installed (default: 0.9)")
    a("--stage", choices=["all", "pretrain", "segmenter", "classifier"], default="all",
      help="run only up to the MAE (pretrain), or the MAE and one model (segmenter, "
           "classifier: each installed on its own, so two processes can build them side by "
           "side once the MAE exists) (default: all)")
    a("--seed", type=int, default=0,
      help="seed of initialisation, data order and masks (default: 0)")
    return p


QUICK = {"pretrain_cases": 2, "pretrain_slices": 16, "pretrain_epochs": 1, "pretrain_batch": 16,
         "seg_train": 16, "seg_hard": 4, "seg_val": 4, "seg_test": 4, "seg_steps": 4,
         "cls_train": 16, "cls_val": 8, "cls_test": 8, "cls_steps": 4, "cls_lesion_steps": 4,
         "min_auc": 0.0}


# -- data ----------------------------------------------------------------------------------------
def train_slices(n: int, seed: int, variation: str = "standard"):
    """Training/validation phantoms at STORE px with the noise and blur a RENDER-px phantom has
    after area-averaging to STORE px (noise 12 HU / 2, blur 0.7 px / 2 + the averaging box):
    the statistics of the images the plugin sees, at a quarter of the rendering cost."""
    from training.data.synthetic import make_slices
    return make_slices(n, seed, STORE, noise_hu=6.0, blur_px=0.5, variation=variation)


def write_unlabelled(folder: Path, args) -> None:
    """Stage 1: the unlabelled PNG folder (idempotent: reused when complete)."""
    import numpy as np
    from skimage.io import imsave

    from training.data import synthetic
    from training.runtime.atomic import atomic_path

    done = folder.with_name(folder.name + ".complete")
    if done.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    lo, width = CT_WINDOW[0] - CT_WINDOW[1] / 2, CT_WINDOW[1]

    def save(img, name):
        u8 = (np.clip((img - lo) / width, 0, 1) * 255).round().astype(np.uint8)
        with atomic_path(folder / name, suffix=".png") as tmp:
            imsave(tmp, u8, check_contrast=False)

    for seed in range(1000, 1000 + args.pretrain_cases):
        vol, _ = synthetic.make_volume(seed, (24, 256, 256), spacing=(5.0, 1.25, 1.25))
        for z, img in enumerate(vol):
            save(img, f"case{seed}_z{z:02d}.png")
    imgs, _ = synthetic.make_slices(args.pretrain_slices, args.pretrain_seed, 256)
    for i, img in enumerate(imgs):
        save(img, f"slice{args.pretrain_seed}_{i:05d}.png")
    done.write_text("ok\n")
    log(f"unlabelled pool: {args.pretrain_cases} x 24 volume slices + {args.pretrain_slices} "
        f"slices in {folder}")


def pretrain_cmd(args, data: Path, out: Path) -> list[str]:
    return ["-m", "training.pretrain", "--data", str(data), "--output", str(out),
            "--model", args.model, "--input-size", str(args.pretrain_size),
            "--batch-size", str(args.pretrain_batch), "--epochs", str(args.pretrain_epochs),
            "--lr", str(args.pretrain_lr), "--warmup-epochs", "0.5",
            "--mask-unit", "8", "--norm-pix-loss", "--augment", "--num-workers", "0",
            "--check-every", "200", "--log-every", "50", "--vis-every", "0", "--save-every", "200",
            "--threads", str(args.threads), "--seed", str(args.seed), "--resume", "auto"]


def pretrain(args, work: Path) -> Path:
    """Stage 2: MAE pretraining (reused when its exported model exists)."""
    out = work / "mae"
    model = out / "model"
    if (model / "model_card.json").is_file():
        return model
    cmd = pretrain_cmd(args, work / "unlabelled", out)
    if not (out / "checkpoints").is_dir() and out.exists():
        cmd.append("--overwrite")
    log("+ python " + " ".join(_rel(c) for c in cmd))
    t = time.perf_counter()
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True)
    log(f"MAE pretraining took {time.perf_counter() - t:.0f} s")
    return model


def input_use(mae: Path) -> dict:
    """The MAE's last input-use check (masked vs all-masked vs mean-image error)."""
    path = mae.parent / "check.jsonl"
    if not path.is_file():
        return {}
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return lines[-1] if lines else {}


# -- fine-tuning ---------------------------------------------------------------------------------
# The fine-tune recipe knobs (training.finetune.recipe), pinned: the shipped models were trained
# with these before that module's default for pretrained inits (encoder transfer + std rescale +
# 20 frozen-encoder steps, chosen by the label-efficiency ablation) landed.
KNOBS = {"transfer": "encoder", "rescale": "none", "layer_decay": 1.0, "freeze_encoder_steps": 0}
KNOBS_NOTE = ("pinned to encoder-only transfer without rescaling, layer decay or freezing: the "
              "models were trained before training.finetune.recipe's default for pretrained "
              "inits (encoder + std rescale + 20 frozen-encoder steps) existed")


def finetune(task: str, mae: Path, train, val, size: int, steps: int, batch: int, lr: float,
             args, names: list[str], init_note: str | None = None):
    """Fine-tune from the MAE (encoder-only transfer); returns (model at its best validation
    epoch, report dict)."""
    import torch

    from training.finetune.engine import FinetuneConfig, build_finetune_model, finetune_steps

    torch.manual_seed(args.seed)
    model, report, _, parent = build_finetune_model(task, len(names), str(mae), args.model,
                                                    encoder_only=True)
    evals = 4 if steps >= 40 else 1
    cfg = FinetuneConfig(task=task, num_classes=len(names), epochs=evals,
                         steps_per_epoch=max(1, steps // evals), batch_size=batch, lr=lr,
                         warmup_epochs=0.5, augment=False, seed=args.seed, **KNOBS)
    best, history, t0 = None, [], time.perf_counter()
    for ev in finetune_steps(model, train, val, cfg, class_names=names):
        if ev["kind"] == "step" and ev["step"] % 40 == 0:
            log(f"  {task} {size}px step {ev['step']}/{ev['total_steps']} loss {ev['loss']:.4f}")
        if ev["kind"] == "epoch":
            history.append({k: ev.get(k) for k in ("epoch", "step", "train_loss", "val_loss",
                                                   "val_dice", "val_auc")})
            log(f"  {task} {size}px epoch {ev['epoch']}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in history[-1].items()
                if isinstance(v, float)))
            if ev["is_best"]:
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    recipe = {"init": init_note or "MAE (this build), encoder-only transfer: the decoder/head "
                                   "start from random init (issue 14: the transferred MAE "
                                   "decoder cost Dice)",
              "transfer": report.to_dict() if report is not None else None,
              "parent": _rel(parent),
              "finetune": {**cfg.__dict__, "selection": "best validation epoch (of "
                           f"{evals}: {'Dice' if task == 'segmentation' else 'loss'})"},
              "history": history, "seconds": round(time.perf_counter() - t0, 1)}
    return model, recipe


def save(model, folder: Path, name: str, names_colors: list[dict], size: int, description: str,
         provenance: dict) -> Path:
    import torch

    from training.data.preprocessing import Preprocessing
    from training.weights.checkpoint import save_checkpoint

    prep = Preprocessing(input_size=size, modality="CT", ct_window=CT_WINDOW)
    model.cfg = model.cfg.replace(img_size=size)  # informative only: the card's input side
    return save_checkpoint(model, folder, name=name, classes=names_colors,
                           preprocessing=prep.to_dict(), provenance=provenance,
                           description=description, overwrite=True, dtype=torch.float16)


# -- measurement ---------------------------------------------------------------------------------
def boundary_scores(pred, truth, num_classes: int, tol: float = 1.0) -> dict:
    """Boundary quality of one label map against the truth, over the foreground classes present
    in either: ``f1`` (boundary F1 within ``tol`` px; 0 for an organ missed or invented),
    ``distance`` (mean symmetric boundary distance in px, over the organs present in both; None
    if there are none), ``missed`` / ``spurious`` (organs only in the truth / only in the
    prediction)."""
    import numpy as np
    from scipy.ndimage import binary_erosion, distance_transform_edt

    f1s, dists, missed, spurious = [], [], 0, 0
    for c in range(1, num_classes):
        p, t = pred == c, truth == c
        if not p.any() and not t.any():
            continue
        if not p.any() or not t.any():
            f1s.append(0.0)
            missed, spurious = missed + int(t.any()), spurious + int(p.any())
            continue
        bp, bt = p ^ binary_erosion(p), t ^ binary_erosion(t)
        d_to_t, d_to_p = distance_transform_edt(~bt), distance_transform_edt(~bp)
        prec = float((d_to_t[bp] <= tol).mean())
        rec = float((d_to_p[bt] <= tol).mean())
        f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
        dists.append(float(np.concatenate([d_to_t[bp], d_to_p[bt]]).mean()))
    return {"f1": float(np.mean(f1s)) if f1s else 1.0,
            "distance": float(np.mean(dists)) if dists else None,
            "missed": missed, "spurious": spurious}


def measure_segmenter(folder: Path, images, labels, names: list[str]) -> dict:
    """Held-out scores of the saved checkpoint at full resolution, through the plugin's path."""
    import numpy as np

    from training.finetune.metrics import SegmentationMeter
    from training.interactive.inference import run, segment_steps
    from training.weights.checkpoint import load_checkpoint

    model, card = load_checkpoint(folder)
    res = run(segment_steps(model, card, images, modality="CT", batch_size=8))
    meter = SegmentationMeter(card.num_classes, names)
    meter.update(res.labels, labels)
    r = meter.result()
    bf = [boundary_scores(p, t, card.num_classes) for p, t in zip(res.labels, labels, strict=True)]
    dists = [b["distance"] for b in bf if b["distance"] is not None]
    return {"slices": int(len(images)), "side": int(images.shape[-1]),
            "mean_dice": r["mean_dice"], "mean_dice_pooled": r["mean_dice_pooled"],
            "dice_per_class": {c["name"]: c["dice"] for c in r["per_class"][1:]},
            "boundary_f1_1px": float(np.mean([b["f1"] for b in bf])),
            "boundary_distance_px": float(np.mean(dists)) if dists else None,
            "organs_missed": int(sum(b["missed"] for b in bf)),
            "organs_spurious": int(sum(b["spurious"] for b in bf))}


def cpu_seconds_per_slice(folder: Path, image, repeats: int = 3) -> float:
    """CPU seconds (one thread) per 512 x 512 slice through ``segment_steps`` (8-slice volume,
    the widget's batch): the minimum over ``repeats`` runs, after a warm-up run."""
    import torch

    from training.interactive.inference import run, segment_steps
    from training.weights.checkpoint import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, card = load_checkpoint(folder)
        run(segment_steps(model, card, image[:2], modality="CT"))
        best = float("inf")
        for _ in range(repeats):
            t = time.process_time()
            run(segment_steps(model, card, image, modality="CT", batch_size=8))
            best = min(best, (time.process_time() - t) / len(image))
        return best
    finally:
        torch.set_num_threads(threads)


def measure_classifier(folder: Path, images, y, names: list[str]) -> dict:
    from training.finetune.metrics import classification_metrics
    from training.interactive.inference import classify_steps, run
    from training.weights.checkpoint import load_checkpoint

    model, card = load_checkpoint(folder)
    res = run(classify_steps(model, card, images, modality="CT"))
    m = classification_metrics(y, res.probabilities, names)
    return {"slices": int(len(y)), "side": int(images.shape[-1]), "roc_auc": m["roc_auc"],
            "pr_auc": m["pr_auc"], "accuracy": m["accuracy"],
            "confusion_matrix": m["confusion_matrix"], "class_counts": m["class_counts"]}


RUN_ONLY = {"work", "out", "quick", "threads", "stage", "no_install", "seg_sizes",
            "dice_tolerance", "boundary_tolerance", "min_auc",
            "seg_test", "seg_test_seed"}  # the segmenters are re-measured on every run


def settings(args, drop_prefix: str) -> dict:
    """The options a cached stage result depends on (a stage is reused only if they match)."""
    return {k: v for k, v in sorted(vars(args).items())
            if k not in RUN_ONLY and not k.startswith(drop_prefix)
            and not isinstance(v, Path)}


def cached(path: Path, folder: Path, key: dict) -> dict | None:
    if not (path.is_file() and (folder / "model_card.json").is_file()):
        return None
    d = json.loads(path.read_text())
    if d.get("settings") != key:
        log(f"{path.name}: made with other settings, rebuilding")
        return None
    return d


def lesion_masks(n: int, seed: int, size: int):
    """The lesion masks (uint8, 1 = lesion) of ``make_classification_set(n, seed, size)``: the
    same cases in the same order (its sampling grid and shuffle)."""
    import numpy as np

    from training.data.synthetic import PhantomCase

    g = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = np.meshgrid(g, g, indexing="ij")
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        case = PhantomCase(seed * 1_000_003 + i, lesion=(i % 2 == 1))
        if case.has_lesion:
            _, lab = case.render(case.lesion.cz, size)
            masks[i] = case.lesion.inside(x, y, case.lesion.cz) & (lab == 1)
    return masks[np.random.default_rng([seed, 17]).permutation(n)]


def choose_size(rows: list[dict], dice_tol: float, bf_tol: float) -> dict:
    best_dice = max(r["mean_dice"] for r in rows)
    best_bf = max(r["boundary_f1_1px"] for r in rows)
    ok = [r for r in rows if r["mean_dice"] >= best_dice - dice_tol
          and r["boundary_f1_1px"] >= best_bf - bf_tol]
    if not ok:  # no size is near the best on both: the best Dice wins
        return max(rows, key=lambda r: r["mean_dice"])
    return min(ok, key=lambda r: (r["cpu_s_per_slice"], r["size"]))


def size_table(rows: list[dict]) -> str:
    head = ("| input size | Dice (512², held out) | boundary F1 ≤1 px | boundary distance px | "
            "organs missed / spurious | CPU s / 512² slice (1 thread) | fine-tune s |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    return head + "".join(
        f"| {r['size']} | {r['mean_dice']:.3f} | {r['boundary_f1_1px']:.3f} | "
        f"{_num(r['boundary_distance_px'])} | {r['organs_missed']} / {r['organs_spurious']} | "
        f"{r['cpu_s_per_slice']:.3f} | {r['finetune_seconds']:.0f} |\n" for r in rows)


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


# -- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    explicit_out = any(a == "--out" or a.startswith("--out=") for a in (argv or sys.argv[1:]))
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.seg_sizes = args.seg_sizes[:2] if len(args.seg_sizes) > 1 else args.seg_sizes
        if not explicit_out:
            args.out = None
    if args.no_install:
        args.out = None
    for s in [*args.seg_sizes, args.cls_size, args.pretrain_size]:
        if s % 32:
            p.error(f"input sizes must be multiples of 32 (the patch grid is merged 3 times), "
                    f"got {s}")
    from training.runtime.threads import configure_threads
    configure_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    # 1-2. unlabelled pool, MAE
    write_unlabelled(work / "unlabelled", args)
    mae = pretrain(args, work)
    check = input_use(mae)
    log(f"MAE input-use check: {check}")
    common = {"built_by": "scripts/build_builtin_models.py",
              "command": "python scripts/build_builtin_models.py " + " ".join(
                  _rel(a) for a in (argv if argv is not None else sys.argv[1:])),
              "pretraining": {"cmd": "python " + " ".join(_rel(c) for c in
                                                          pretrain_cmd(args, Path("unlabelled"),
                                                                       Path("mae"))),
                              "unlabelled": f"synthetic CT phantom cases 1000-"
                                            f"{999 + args.pretrain_cases} (24 x 256 x 256 each) "
                                            f"+ {args.pretrain_slices} slices of phantom seed "
                                            f"{args.pretrain_seed} (256 x 256)",
                              "input_use_check": check}}

    if args.stage == "pretrain":
        return 0
    if args.stage in ("all", "segmenter"):
        build_segmenter(args, work, mae, common)
    if args.stage in ("all", "classifier"):
        build_classifier(args, work, mae, common)
    if args.out is not None and args.out.resolve() == PACKAGE_MODELS.resolve():
        if args.stage != "all":
            log("installed one model: run python scripts/ood_reference.py once both are built")
            return 0
        cmd = ["scripts/ood_reference.py"]
        log("+ python " + " ".join(cmd))
        subprocess.run([sys.executable, *cmd], cwd=REPO, check=True)
    log(f"done in {time.perf_counter() - t_all:.0f} s")
    return 0


def build_segmenter(args, work: Path, mae: Path, common: dict) -> None:
    """Stage 3: fine-tune, save and measure every candidate size; install the chosen one."""
    import numpy as np

    from training.data.datasets import ArrayDataset
    from training.data.preprocessing import Preprocessing
    from training.data.synthetic import CLASS_NAMES, CLASSES, make_slices
    from training.runtime.atomic import atomic_write_text

    def seg_data(size):
        prep = Preprocessing(input_size=size, modality="CT", ct_window=CT_WINDOW)
        return ArrayDataset(seg_train[0], seg_train[1], prep=prep), \
            ArrayDataset(seg_val[0], seg_val[1], prep=prep)

    log(f"rendering {args.seg_train} + {args.seg_hard} training, {args.seg_val} validation and "
        f"{args.seg_test} test phantom slices at {RENDER} px")
    a = train_slices(args.seg_train, args.seg_train_seed)
    b = train_slices(args.seg_hard, args.seg_hard_seed, "hard")
    seg_train = (np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))
    seg_val = train_slices(args.seg_val, args.seg_val_seed)
    test_img, test_lab = make_slices(args.seg_test, args.seg_test_seed, RENDER)
    rows = []
    for size in args.seg_sizes:
        folder = work / f"seg{size}"
        mpath = work / f"seg{size}.json"
        key = settings(args, "cls_")
        old = cached(mpath, folder, key)
        if old is not None:  # trained earlier with these settings: measured again here
            seconds = old.get("finetune_seconds", old.get("row", {}).get("finetune_seconds"))
            log(f"segmenter {size}px: reusing the model trained in {seconds:.0f} s")
        else:
            log(f"segmenter {size}px: fine-tuning {args.seg_steps} steps")
            train, val = seg_data(size)
            model, recipe = finetune("segmentation", mae, train, val, size, args.seg_steps,
                                     args.seg_batch, args.seg_lr, args, CLASS_NAMES)
            save(model, folder, "abdomen-organs", CLASSES, size, SEG_DESCRIPTION,
                 {**common, "recipe": recipe})
            seconds = recipe["seconds"]
            atomic_write_text(mpath, json.dumps({"finetune_seconds": seconds, "settings": key},
                                                indent=2) + "\n")
        m = measure_segmenter(folder, test_img, test_lab, CLASS_NAMES)
        row = {"size": size, **m, "cpu_s_per_slice": cpu_seconds_per_slice(folder, test_img[:8]),
               "finetune_seconds": seconds}
        rows.append(row)
        log(f"segmenter {size}px: Dice {row['mean_dice']:.4f}, boundary F1 "
            f"{row['boundary_f1_1px']:.3f}, distance {row['boundary_distance_px']} px, "
            f"missed {row['organs_missed']}, spurious {row['organs_spurious']}, "
            f"{row['cpu_s_per_slice']:.3f} CPU s/slice")
    chosen = choose_size(rows, args.dice_tolerance, args.boundary_tolerance)
    table = size_table(rows)
    print("\n" + table, flush=True)
    log(f"chosen segmenter input size: {chosen['size']}")
    seg_card_extra = {
        "input_size": {"chosen": chosen["size"], "candidates": rows, "table_markdown": table,
                       "rule": f"the fastest candidate whose held-out Dice is within "
                               f"{args.dice_tolerance} of the best and whose boundary F1 (1 px) "
                               f"is within {args.boundary_tolerance} of the best",
                       "measured": f"segment_steps on {args.seg_test} held-out {RENDER} x "
                                   f"{RENDER} phantom slices (seed {args.seg_test_seed}), logits "
                                   f"upsampled bilinearly to {RENDER} x {RENDER} and scored "
                                   f"against the {RENDER} x {RENDER} truth; CPU seconds per slice"
                                   f" with one thread (process time, best of 3, 8-slice batch)"},
        "held_out": {k: v for k, v in chosen.items() if k not in ("size",)},
        "data": {"seeds": {"pretraining_cases": [1000, 999 + args.pretrain_cases],
                           "pretraining_slices": args.pretrain_seed,
                           "train": args.seg_train_seed, "train_hard": args.seg_hard_seed,
                           "validation": args.seg_val_seed, "test": args.seg_test_seed},
                 "train_images": args.seg_train + args.seg_hard, "val_images": args.seg_val,
                 "test_images": args.seg_test,
                 "description": f"{args.seg_train} standard + {args.seg_hard} 'hard' synthetic "
                                f"CT phantom slices at {STORE} px (noise 6 HU, blur 0.5 px: a "
                                f"{RENDER}-px phantom area-averaged); validation {args.seg_val}, "
                                f"held-out test {args.seg_test} at {RENDER} px; every set from "
                                f"its own seed (disjoint cases)"}}
    if args.out is not None:
        install(work / f"seg{chosen['size']}", args.out / "abdomen-organs", seg_card_extra,
                common)


def build_classifier(args, work: Path, mae: Path, common: dict) -> None:
    """Stage 4: fine-tune and measure the classifier; install it only if held-out AUC is enough."""
    from training.data.datasets import ArrayDataset
    from training.data.preprocessing import Preprocessing
    from training.data.synthetic import CLS_CLASSES, make_classification_set
    from training.runtime.atomic import atomic_write_text

    cls_folder, cls_json = work / f"cls{args.cls_size}", work / f"cls{args.cls_size}.json"
    cls_names = [c["name"] for c in CLS_CLASSES]
    key = settings(args, "seg_")
    cls = cached(cls_json, cls_folder, key)
    if cls is None:
        prep = Preprocessing(input_size=args.cls_size, modality="CT", ct_window=CT_WINDOW)
        log(f"classifier: rendering {args.cls_train} + {args.cls_val} slices")
        kw = {"noise_hu": 6.0, "blur_px": 0.5}  # as train_slices
        ti, tl = make_classification_set(args.cls_train, args.cls_train_seed, STORE, **kw)
        vi, vl = make_classification_set(args.cls_val, args.cls_val_seed, STORE, **kw)
        train = ArrayDataset(ti, list(tl), task="classification", prep=prep)
        val = ArrayDataset(vi, list(vl), task="classification", prep=prep)
        init, note, lesion_recipe = mae, None, None
        if args.cls_lesion_steps > 0:
            # dense supervision first: the encoder learns to segment the lesions of the same
            # training slices, then the classifier starts from that encoder
            log(f"classifier: lesion segmentation pre-step, {args.cls_lesion_steps} steps")
            seg_train = ArrayDataset(ti, lesion_masks(args.cls_train, args.cls_train_seed, STORE),
                                     prep=prep)
            seg_val = ArrayDataset(vi, lesion_masks(args.cls_val, args.cls_val_seed, STORE),
                                   prep=prep)
            lesion_model, lesion_recipe = finetune(
                "segmentation", mae, seg_train, seg_val, args.cls_size, args.cls_lesion_steps,
                args.cls_batch, args.cls_lesion_lr, args, ["background", "lesion"])
            init = save(lesion_model, work / f"lesionseg{args.cls_size}", "lesion-segmentation",
                        [{"index": 0, "name": "background", "color": "#00000000"},
                         {"index": 1, "name": "lesion", "color": "#D55E00"}], args.cls_size,
                        "intermediate: lesion segmentation for the classifier's encoder",
                        {**common, "recipe": lesion_recipe})
            note = ("MAE (this build) -> lesion segmentation of the training slices (dense "
                    "labels, encoder-only transfer from the MAE) -> this classifier (encoder "
                    "from the lesion segmenter, new head): classification alone from the MAE "
                    "stayed at chance (val AUC 0.51-0.57 after 400 steps at 64 and 128 px)")
        model, recipe = finetune("classification", init, train, val, args.cls_size,
                                 args.cls_steps, args.cls_batch, args.cls_lr, args, cls_names,
                                 init_note=note)
        if lesion_recipe is not None:
            recipe["lesion_segmentation"] = lesion_recipe
        save(model, cls_folder, "liver-lesion", CLS_CLASSES, args.cls_size, CLS_DESCRIPTION,
             {**common, "recipe": recipe})
        log(f"classifier: rendering {args.cls_test} held-out test slices at {RENDER} px")
        xi, xl = make_classification_set(args.cls_test, args.cls_test_seed, RENDER)
        cls = {"held_out": measure_classifier(cls_folder, xi, xl, cls_names),
               "val": _val_metrics(cls_folder, val, cls_names), "settings": key}
        atomic_write_text(cls_json, json.dumps(cls, indent=2) + "\n")
    log(f"classifier held-out: ROC AUC {cls['held_out']['roc_auc']:.4f}, PR AUC "
        f"{cls['held_out']['pr_auc']:.4f}, accuracy {cls['held_out']['accuracy']:.3f} on "
        f"{cls['held_out']['slices']} slices")

    cls_card_extra = {
        "held_out": cls["held_out"],
        "input_size": {"chosen": args.cls_size,
                       "rule": f"lesions (radius 7-11 % of the half field of view) are "
                               f"{0.07 * args.cls_size:.0f}-{0.11 * args.cls_size:.0f} px "
                               f"across at {args.cls_size} px, visible at a 60 HU contrast "
                               f"over the liver (checked on images); not size-searched: "
                               f"classification straight from the MAE failed at 64 and 128 px "
                               f"alike, the lesion-segmentation pre-step made it work"},
        "data": {"seeds": {"pretraining_cases": [1000, 999 + args.pretrain_cases],
                           "pretraining_slices": args.pretrain_seed,
                           "train": args.cls_train_seed, "validation": args.cls_val_seed,
                           "test": args.cls_test_seed},
                 "train_images": args.cls_train, "val_images": args.cls_val,
                 "test_images": args.cls_test,
                 "description": "slices through the liver at the lesion's level, half with a "
                                f"hypodense lesion; training/validation at {STORE} px (noise 6 "
                                f"HU), "
                                f"held-out test at {RENDER} px; every set from its own seed"},
        "metrics": {"val_auc": cls["val"]["roc_auc"], "val_pr_auc": cls["val"]["pr_auc"],
                    "val_accuracy": cls["val"]["accuracy"]}}
    if cls["held_out"]["roc_auc"] is None or cls["held_out"]["roc_auc"] < args.min_auc:
        raise SystemExit(f"the classifier's held-out ROC AUC {cls['held_out']['roc_auc']} is "
                         f"below --min-auc {args.min_auc}: not installed")
    if args.out is not None:
        install(cls_folder, args.out / "liver-lesion", cls_card_extra, common)


def _val_metrics(folder: Path, val, names) -> dict:
    from training.finetune.engine import predict_and_score
    from training.weights.checkpoint import load_checkpoint

    model, card = load_checkpoint(folder)
    r = predict_and_score(model, val.with_prep(card.prep), "classification", card.prep,
                          class_names=names)
    return {"roc_auc": r["roc_auc"], "pr_auc": r["pr_auc"], "accuracy": r["accuracy"]}


def install(src: Path, dest: Path, extra: dict, common: dict) -> None:
    """Copy a candidate (fp16 weights, card) into ``dest`` with the build's records in its card;
    the card keeps ``provenance.metrics`` (validation) that the plugin reads. The command of
    this run is recorded; if the candidate was trained by another (``--no-install``) run, that
    one's command stays as ``candidate_command``."""
    import torch

    from training.weights.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(src)
    card.domain = {"modalities": ["CT"], "body_regions": ["abdomen"]}  # synthetic abdominal CT
    prov = dict(card.provenance)
    if prov.get("command") != common["command"]:
        prov["candidate_command"] = prov.get("command")
    prov["command"] = common["command"]
    metrics = extra.pop("metrics", None)
    prov.update(extra)
    if metrics is not None:
        prov["metrics"] = metrics
    elif "metrics" not in prov:
        hist = [h for h in prov.get("recipe", {}).get("history", []) if h.get("val_dice")]
        if hist:
            prov["metrics"] = {"val_dice": max(h["val_dice"] for h in hist)}
    prov.setdefault("data", {})
    if isinstance(prov.get("recipe"), dict):
        prov["recipe"] = {**prov["recipe"], "knobs": KNOBS, "knobs_note": KNOBS_NOTE}
    card.provenance = _relative_paths(prov, str(REPO) + "/")
    path = save_checkpoint(model, dest, card, overwrite=True, dtype=torch.float16)
    log(f"installed {_rel(str(path))}")


def _rel(s) -> str:
    return str(s).replace(str(REPO) + "/", "")


def _relative_paths(obj, prefix: str):
    """Strip ``prefix`` (the checkout's absolute path) from every string in a nested card field."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, prefix) for v in obj]
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    return obj


if __name__ == "__main__":
    sys.exit(main())
