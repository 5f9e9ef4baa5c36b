"""Rebuild ``tests/finetune_gui/data/weak-tiny-seg``: a tiny 64-px segmentation model of the
synthetic phantoms that never saw a kidney (kidney pixels were labelled background), so it
is poor on that one class. The few-shot tests correct kidneys and expect it to learn them.

    python -m tests.finetune_gui.make_weak_base [--steps 400]

Seeded; takes a few minutes on 2 CPU cores (fp16 weights, ~0.4 MB).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "data" / "weak-tiny-seg"
KIDNEY = 3


def main(argv=None) -> int:
    from training.data.datasets import ArrayDataset
    from training.data.preprocessing import Preprocessing
    from training.data.synthetic import CLASSES, CT_WINDOW, make_slices
    from training.finetune.engine import FinetuneConfig, finetune_steps
    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    prep = Preprocessing(input_size=64, modality="CT", ct_window=CT_WINDOW)
    images, labels = make_slices(128, seed=0, size=64)
    labels[labels == KIDNEY] = 0
    torch.manual_seed(0)
    model = build_model("segmentation", "tiny", num_classes=len(CLASSES), img_size=64)
    cfg = FinetuneConfig(num_classes=len(CLASSES), mode="full", epochs=1,
                         steps_per_epoch=args.steps, batch_size=4, lr=3e-3,
                         warmup_epochs=20 / args.steps)
    for ev in finetune_steps(model, ArrayDataset(images, labels, prep=prep), None, cfg):
        if ev["kind"] == "step" and ev["step"] % 50 == 0:
            print(ev["step"], round(ev["loss"], 4), flush=True)
    save_checkpoint(model, args.out, name="weak-tiny-seg", classes=CLASSES,
                    preprocessing=prep.to_dict(), dtype=torch.float16, overwrite=True,
                    description="test fixture: phantom organs, never saw a kidney",
                    provenance={"built_by": "tests/finetune_gui/make_weak_base.py",
                                "steps": args.steps})
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
