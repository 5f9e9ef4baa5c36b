"""Rebuild the models shipped in ``napari_vismae/models/`` with the project's own commands.

    python scripts/build_builtin_models.py [--work build/builtin] [--quick]

1. write synthetic CT phantom series (DICOM, header window 40/400);
2. ``python -m training.prepare`` -> shards;
3. ``python -m training.pretrain`` -> a small VIS-MAE (MAE pretraining);
4. ``python -m training.finetune`` twice from that MAE: abdominal organ segmentation
   and liver-lesion classification, on synthetic phantoms;
5. copy each best checkpoint (fp16 weights) into the package with a model card.

Everything is seeded: the same command gives the same models on the same
machine. These are demonstration models for synthetic phantoms, not clinical tools.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_MODELS = REPO / "napari_vismae" / "models"
SIZE = 128  # model input side: small enough to fine-tune on a laptop CPU in minutes
COMMON_PREP = ["--input-size", str(SIZE), "--modality", "CT", "--ct-window", "40", "400"]


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "build" / "builtin")
    p.add_argument("--quick", action="store_true", help="tiny run to check the pipeline")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    q = args.quick
    work = args.work
    n_cases, pre_epochs = (2, 1) if q else (24, 8)
    seg_n, seg_epochs = (16, 1) if q else (300, 15)
    cls_n, cls_epochs = (16, 1) if q else (200, 15)

    # 1. unlabeled phantom series (DICOM, so prepare applies the header window like real CT)
    from training.data import synthetic

    dicom = work / "unlabeled"
    for seed in range(1000, 1000 + n_cases):
        if not (dicom / f"case{seed}").is_dir():
            vol, _ = synthetic.make_volume(seed, (24, 256, 256), spacing=(5.0, 1.25, 1.25))
            synthetic.write_dicom_series(vol, dicom / f"case{seed}", spacing=(5.0, 1.25, 1.25),
                                         seed=seed)
    # 2.-3. MAE pretraining
    sh("-m", "training.prepare", str(dicom), str(work / "shards"), "--size", str(SIZE),
       "--workers", str(args.threads))
    sh("-m", "training.pretrain", "--data", str(work / "shards"), "--output", str(work / "mae"),
       "--model", "small", "--input-size", str(SIZE), "--epochs", str(pre_epochs),
       "--batch-size", "32", "--lr", "1.5e-3", "--warmup-epochs", "2", "--num-workers", "0",
       "--vis-every", "100", "--save-every", "200", "--resume", "auto", "--seed", "0")
    mae = work / "mae" / "model"
    # 4. fine-tuning from the MAE
    sh("-m", "training.finetune", "--task", "segmentation", "--init", str(mae),
       "--synthetic", str(seg_n), "--synthetic-size", "256", "--synthetic-seed", "1",
       "--class-names", *synthetic.CLASS_NAMES,
       "--class-colors", *[c["color"] for c in synthetic.CLASSES],
       "--epochs", str(seg_epochs), "--batch-size", "16", "--lr", "1e-3", "--warmup-epochs", "2",
       "--val-fraction", "0.15", "--threads", str(args.threads), "--out", str(work / "seg"),
       "--name", "abdomen-organs", "--no-progress", *COMMON_PREP)
    sh("-m", "training.finetune", "--task", "classification", "--init", str(mae),
       "--synthetic", str(cls_n), "--synthetic-size", "256", "--synthetic-seed", "2",
       "--class-names", *[c["name"] for c in synthetic.CLS_CLASSES],
       "--epochs", str(cls_epochs), "--batch-size", "16", "--lr", "5e-4", "--warmup-epochs", "2",
       "--val-fraction", "0.2", "--threads", str(args.threads), "--out", str(work / "cls"),
       "--name", "liver-lesion", "--no-progress", *COMMON_PREP)
    # 5. into the package, fp16
    if not q:
        install(work / "seg" / "best", "abdomen-organs",
                "Demo model: abdominal organs (liver, spleen, kidney, bone) on synthetic CT "
                "phantoms. Small VIS-MAE pretrained on synthetic phantoms. Not for clinical use.")
        install(work / "cls" / "best", "liver-lesion",
                "Demo model: liver lesion yes/no on synthetic CT phantoms. Small VIS-MAE "
                "pretrained on synthetic phantoms. Not for clinical use.")
        sh("scripts/ood_reference.py")  # 6. the OOD reference statistics into both cards
    return 0


def install(src: Path, name: str, description: str) -> None:
    import torch

    from training.weights.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(src)
    card.name, card.description = name, description
    card.domain = {"modalities": ["CT"], "body_regions": ["abdomen"]}  # synthetic abdominal CT
    card.provenance["built_by"] = "scripts/build_builtin_models.py"
    _relative_paths(card.provenance, str(REPO) + "/")  # no machine paths in shipped cards
    path = save_checkpoint(model, PACKAGE_MODELS / name, card, overwrite=True, dtype=torch.float16)
    print(f"installed {path}: {json.dumps(card.provenance.get('metrics', {}))[:300]}")


def _relative_paths(obj, prefix: str):
    """Strip ``prefix`` (the checkout's absolute path) from every string in a nested card field."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _relative_paths(v, prefix)
    elif isinstance(obj, list):
        obj[:] = [_relative_paths(v, prefix) for v in obj]
    elif isinstance(obj, str):
        return obj.replace(prefix, "")
    return obj


if __name__ == "__main__":
    sys.exit(main())
