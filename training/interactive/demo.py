"""Headless demo: run a model (a built-in one by default) on the synthetic CT study, no GUI.

    napari-vismae headless-demo                          # the built-in abdomen-organs model
    napari-vismae headless-demo --model liver-lesion     # the built-in lesion classifier
    napari-vismae headless-demo --model runs/seg/best    # any checkpoint folder of ours

The study is the napari sample (synthetic abdominal CT phantoms with known labels), written as
a DICOM series and read back through the same reader and preprocessing as the plugin. A
segmentation model writes ``labels.nii.gz`` (aligned with the series), ``overlay.png`` (the
slice with the most foreground: true labels left, prediction right) and ``metrics.json``
(Dice per class against the true labels); a classifier writes ``probabilities.csv`` (per
slice) and ``metrics.json`` (the study-level decision, and whether the phantom has a lesion).
The built-in models are demonstration models trained on synthetic phantoms, not clinical
tools.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE_SEED = 7  # the napari sample study (napari_vismae._sample_data)
SAMPLE_SHAPE = (32, 256, 256)
SAMPLE_SPACING = (5.0, 1.25, 1.25)
DEFAULT_MODEL = "abdomen-organs"


def sample_study(folder: Path, shape=SAMPLE_SHAPE, seed: int = SAMPLE_SEED):
    """Write the synthetic CT study as DICOM into ``folder`` and read it back:
    -> (Volume, true labels (z, y, x))."""
    from training.data import synthetic
    from training.io import read_image

    vol, labels = synthetic.make_volume(seed, shape, spacing=SAMPLE_SPACING)
    synthetic.write_dicom_series(vol, folder, spacing=SAMPLE_SPACING, seed=seed,
                                 description="Synthetic abdomen (napari-vismae sample)")
    (volume,) = read_image(folder)
    return volume, labels


def find_model(spec: str, models_dir: Path | None):
    """A model name (built-in folder or the user's model folder) or a checkpoint path."""
    from training.weights.store import ModelStore

    path = Path(spec)
    if path.exists():
        return path
    store = ModelStore(builtin_dirs=[models_dir] if models_dir else [])
    entries = store.list()
    for e in entries:
        if e.name == spec:
            return e.path
    names = ", ".join(e.name for e in entries) or "none found"
    raise FileNotFoundError(f"--model {spec!r}: no such checkpoint folder and no model of that "
                            f"name (available: {names})")


def save_png(path: Path, rgb: np.ndarray) -> None:
    from skimage.io import imsave

    from training.runtime.atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, rgb, check_contrast=False)


def overlay(image_unit: np.ndarray, labels: np.ndarray, colors: dict[int, str]) -> np.ndarray:
    """Grey slice with label colours blended at 45 %."""
    rgb = np.repeat((np.clip(image_unit, 0, 1) * 255).astype(np.float32)[..., None], 3, -1)
    for k, hexcolor in colors.items():
        if k == 0 or not hexcolor or len(hexcolor) < 7:
            continue
        c = np.array([int(hexcolor[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
        m = labels == k
        rgb[m] = 0.55 * rgb[m] + 0.45 * c
    return rgb.astype(np.uint8)


def run(model_path: Path, out: Path, device: str = "cpu", shape=SAMPLE_SHAPE) -> dict:
    """Run the model on the sample study; write the outputs into ``out``; -> the metrics."""
    import torch

    from training.data import synthetic
    from training.data.preprocessing import scale_to_unit
    from training.finetune.metrics import SegmentationMeter
    from training.interactive.inference import classify_steps, segment_steps
    from training.interactive.inference import run as drain
    from training.io.writers import write_labels_nifti
    from training.runtime.atomic import atomic_write_text
    from training.weights.checkpoint import load_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    model, card = load_checkpoint(model_path)
    volume, truth = sample_study(out / "study-dicom", shape)
    image = np.asarray(volume.array, np.float32)
    t0 = time.perf_counter()
    written = [out / "study-dicom"]
    metrics: dict = {"model": card.name, "model_path": str(model_path), "task": card.task,
                     "study": f"synthetic CT phantom, seed {SAMPLE_SEED}, {shape[0]} slices of "
                              f"{shape[1]}x{shape[2]}"}
    if card.task == "segmentation":
        res = drain(segment_steps(model, card, image, modality=volume.modality,
                                  window=volume.window, device=device))
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        meter = SegmentationMeter(card.num_classes, card.class_names)
        meter.update(torch.from_numpy(res.labels.astype(np.int64)),
                     torch.from_numpy(truth.astype(np.int64)))
        scores = meter.result()
        metrics["dice_per_class"] = {c["name"]: c["dice"] for c in scores["per_class"]}
        metrics["mean_dice"] = scores["mean_dice"]
        written.append(write_labels_nifti(out / "labels.nii.gz", res.labels, reference=volume))
        z = int(np.argmax((truth > 0).sum((1, 2))))
        unit = scale_to_unit(image[z], card.prep, volume.modality, volume.window)
        colors = {c["index"]: c["color"] for c in card.classes}
        save_png(out / "overlay.png", np.concatenate(
            [overlay(unit, truth[z], colors), overlay(unit, res.labels[z], colors)], axis=1))
        written.append(out / "overlay.png")
    elif card.task == "classification":
        res = drain(classify_steps(model, card, image, modality=volume.modality,
                                   window=volume.window, device=device))
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        study = res.aggregate()
        metrics["study_probabilities"] = dict(zip(card.class_names, map(float, study), strict=True))
        metrics["study_decision"] = card.class_names[int(study.argmax())]
        metrics["phantom_has_lesion"] = synthetic.PhantomCase(SAMPLE_SEED).has_lesion
        rows = ["slice," + ",".join(card.class_names)] + [
            f"{z}," + ",".join(f"{p:.4f}" for p in res.probabilities[i])
            for i, z in enumerate(res.slices)]
        atomic_write_text(out / "probabilities.csv", "\n".join(rows) + "\n")
        written.append(out / "probabilities.csv")
    else:
        raise ValueError(f"{model_path}: a {card.task} model; the demo runs segmentation and "
                         "classification models")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    metrics["written"] = [str(p) for p in written + [out / "metrics.json"]]
    return metrics


def build_parser(prog: str = "napari-vismae headless-demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a built-in or user model name (abdomen-organs, liver-lesion, ...) or a "
                        "checkpoint folder (default: %(default)s)")
    p.add_argument("--output", type=Path, default=Path("demo_output"),
                   help="folder for the results (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--slices", type=int, default=SAMPLE_SHAPE[0],
                   help="slices of the synthetic study (default: %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: "
                   "$OMP_NUM_THREADS, else the CPUs this process may use)")
    return p


def main(argv: list[str] | None = None, models_dir: Path | None = None,
         prog: str = "napari-vismae headless-demo") -> int:
    """``models_dir``: the built-in models (the plugin passes ``napari_vismae/models``)."""
    from training.runtime.threads import configure_threads

    args = build_parser(prog).parse_args(argv)
    configure_threads(args.threads)
    try:
        path = find_model(args.model, models_dir)
        m = run(path, args.output, args.device, (args.slices, *SAMPLE_SHAPE[1:]))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{m['model']} ({m['task']}) on the {m['study']}: {m['seconds']} s")
    if m["task"] == "segmentation":
        print("Dice against the true labels: " + ", ".join(
            f"{k} {v:.3f}" for k, v in m["dice_per_class"].items() if v is not None)
            + f" (mean {m['mean_dice']:.3f})")
    else:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in m["study_probabilities"].items())
        truth = "has" if m["phantom_has_lesion"] else "has no"
        print(f"study decision: {m['study_decision']} ({probs}); the phantom {truth} lesion")
    print("wrote " + ", ".join(m["written"]))
    return 0


if __name__ == "__main__":
    from training.runtime.threads import configure_threads

    configure_threads(argv=sys.argv[1:])
    sys.exit(main(prog="python -m training.interactive.demo"))
