"""Record the out-of-distribution reference of the built-in models in their model cards.

    python scripts/ood_reference.py            # write provenance.ood_reference, then measure
    python scripts/ood_reference.py --measure  # only print the scores of test inputs

The reference is the pooled-bottleneck feature statistics (:mod:`training.interactive.ood`)
of the synthetic CT phantoms the built-in models were pretrained on (the cases of
``scripts/build_builtin_models.py``: seeds 1000-1005 of its 24, 24 x 256 x 256 at
5 x 1.25 x 1.25 mm).
Only the card's ``provenance.ood_reference`` changes; the weights (and their sha256) do not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.runtime.threads import configure_threads  # noqa: E402

configure_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.data import synthetic  # noqa: E402
from training.interactive import ood  # noqa: E402
from training.interactive.inference import _input_batch, classify_steps, run, segment_steps  # noqa: E402
from training.runtime.atomic import atomic_write_text  # noqa: E402
from training.weights.checkpoint import load_checkpoint  # noqa: E402

MODELS = ROOT / "napari_vismae" / "models"
BUILTIN = ("abdomen-organs", "liver-lesion")
CASES = range(1000, 1006)  # 6 of the 24 pretraining cases of build_builtin_models.py
# real files from pydicom / pydicom-data: (label, file)
TEST_FILES = [("MR (MR_small)", "MR_small.dcm"), ("MR abdomen (examples_overlay)",
              "examples_overlay.dcm"), ("radiograph chest (RG1_UNCR)", "RG1_UNCR.dcm"),
              ("CT head (J2K_pixelrep_mismatch)", "J2K_pixelrep_mismatch.dcm"),
              ("CT (CT_small)", "CT_small.dcm"), ("ultrasound (US1_UNCR)", "US1_UNCR.dcm")]


def reference_features(model, card) -> torch.Tensor:
    feats = []
    with ood.FeatureTap(model) as tap:
        for seed in CASES:
            vol, _ = synthetic.make_volume(seed, (24, 256, 256), spacing=(5.0, 1.25, 1.25))
            for i in range(0, len(vol), 8):
                x = _input_batch(vol, list(range(i, min(i + 8, len(vol)))), card, "CT", None,
                                 torch.device("cpu"))
                with torch.inference_mode():
                    model(x)
            feats.append(tap.take())
    return torch.cat(feats)


def write_reference(name: str) -> None:
    folder = MODELS / name
    model, card = load_checkpoint(folder)
    model.eval()
    ref = ood.make_reference(reference_features(model, card),
                             data=f"synthetic CT phantoms, cases {CASES.start}-{CASES.stop - 1} "
                                  "(6 of the 24 pretraining cases), all slices")
    path = folder / "model_card.json"
    d = json.loads(path.read_text())
    d["provenance"][ood.OOD_KEY] = ref
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")
    print(f"{name}: reference from {ref['n_slices']} slices, raw median {ref['score_median']:.3g}"
          f", p95 {ref['score_p95']:.3g}")


def test_inputs():
    from pydicom.data import get_testdata_file

    from training.io import read_image

    vol, _ = synthetic.make_volume(7, (32, 256, 256), spacing=(5.0, 1.25, 1.25))
    yield "synthetic CT sample (seed 7, not a reference case)", vol, "CT", None
    for label, fname in TEST_FILES:
        path = get_testdata_file(fname)
        if path is None:
            continue
        try:
            v = read_image(path)[0]
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"  {label}: unreadable ({e})")
            continue
        arr = np.asarray(v.array, np.float32)
        if v.rgb:
            arr = arr.mean(-1)
        yield label, arr, v.modality, v.window


def measure() -> None:
    inputs = list(test_inputs())
    for name in BUILTIN:
        model, card = load_checkpoint(MODELS / name)
        model.eval()
        steps = segment_steps if card.task == "segmentation" else classify_steps
        print(f"{name}:")
        for label, arr, modality, window in inputs:
            res = run(steps(model, card, arr, modality=modality, window=window))
            print(f"  {label:50s} median {np.median(res.ood):8.2f}  "
                  f"min {res.ood.min():8.2f}  max {res.ood.max():8.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="only print the scores of test inputs")
    args = ap.parse_args(argv)
    if not args.measure:
        for name in BUILTIN:
            write_reference(name)
    measure()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
