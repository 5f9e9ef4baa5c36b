"""Fine-tuning with prepared-item caching vs without, timed interleaved in one process.

Two runs of ``finetune_steps`` on the same 512² CT phantom slices (``small`` preset, 224-px
model input, batch 4), held in memory (``ArrayDataset``, what the plugin passes) or as
16-bit PNG files listed in a CSV (``CSVDataset``, the official layout): one with
``cache_mb=0`` (every slice prepared at every step: the previous behaviour), one with the
default cache, advanced step by step in alternation so that machine noise hits both alike
(the order flips every round). Steps of the first epoch (which fills the cache) are
skipped; validation is timed the same way on held-out in-memory slices.
Ratio = uncached seconds / cached seconds (> 1: the cache is faster).

    python -m benchmarks.bench_finetune [--slices 24] [--steps 12]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from training.data.datasets import ArrayDataset, CSVDataset
from training.data.preprocessing import Preprocessing
from training.data.slice_datasets import CacheBudget, CachedDataset
from training.finetune.engine import FinetuneConfig, finetune_steps, predict_and_score
from training.models import build_model

from .common import environment, interleaved, paired_ratio, report

ORDER = (("uncached", 0), ("cached", 1024))


def _slices(n: int, size: int = 512, seed: int = 0):
    from training.data.synthetic import make_slices

    imgs, labs = make_slices(n, seed=seed, size=size)
    return np.asarray(imgs), np.asarray(labs)


def _png_csv(imgs, labs, folder: Path) -> Path:
    from skimage.io import imsave

    rows = ["image,mask"]
    for i, (im, lab) in enumerate(zip(imgs, labs, strict=True)):
        imsave(folder / f"img{i:03d}.png", (np.clip(im, -1024, 3071) + 1024).astype(np.uint16),
               check_contrast=False)
        imsave(folder / f"lab{i:03d}.png", lab.astype(np.uint8), check_contrast=False)
        rows.append(f"img{i:03d}.png,lab{i:03d}.png")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def bench_finetune_cache(n_train: int = 24, n_val: int = 8, steps: int = 12, batch: int = 4,
                         rounds: int = 3, source: str = "array") -> list[dict]:
    device = torch.device("cpu")
    prep = Preprocessing(modality="CT")  # 224-px model input, as the built-in models
    imgs, labs = _slices(n_train + n_val)
    tmp = tempfile.TemporaryDirectory()
    if source == "csv_png":  # HU stored with +1024 offset: values differ, timing does not
        csv_path = _png_csv(imgs[:n_train], labs[:n_train], Path(tmp.name))
        make_train = lambda: CSVDataset(csv_path, prep=prep)  # noqa: E731
    else:
        make_train = lambda: ArrayDataset(imgs[:n_train], labs[:n_train], prep=prep)  # noqa: E731
    classes = int(labs.max()) + 1
    spe = max(1, n_train // batch)
    runs, times = {}, {"uncached": [], "cached": []}
    cpu = {"uncached": [], "cached": []}  # CPU seconds of this process: less hit by neighbours
    for name, mb in ORDER:
        torch.manual_seed(0)
        model = build_model("segmentation", "small", num_classes=classes)
        cfg = FinetuneConfig(num_classes=classes, epochs=1000, batch_size=batch,
                             steps_per_epoch=spe, cache_mb=mb, warmup_epochs=0.0)
        runs[name] = finetune_steps(model, make_train(), None, cfg)
    for gen in runs.values():  # first epoch: fills the cache
        while next(gen)["kind"] != "epoch":
            pass
    done = 0
    while done < steps:  # ABBA: whichever runs second in a round pays ~20 % (allocator)
        for name in (list(runs) if done % 2 == 0 else list(runs)[::-1]):
            gen = runs[name]
            t0, c0 = time.perf_counter(), time.process_time()
            ev = next(gen)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if ev["kind"] == "step":
                times[name].append(dt)
                cpu[name].append(dc)
        done += 1
    step = {k: statistics.median(v) for k, v in times.items()}
    step_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    for gen in runs.values():
        gen.close()
    # the preparation itself, item by item (the robust number: steps are noisy on a busy CPU)
    plain = make_train()
    cached_items = CachedDataset(plain, CacheBudget(2**30))
    for i in range(len(plain)):
        cached_items[i]
    every = lambda d: [d[i] for i in range(len(d))]  # noqa: E731
    item = interleaved({"uncached": lambda: every(plain), "cached": lambda: every(cached_items)},
                       device, rounds, 0)
    item_ms = {k: v / len(plain) * 1000 for k, v in item.items()}
    tmp.cleanup()
    # validation: the same held-out slices, plain vs cached (filled by a first pass)
    model = build_model("segmentation", "small", num_classes=classes).eval()
    val = ArrayDataset(imgs[n_train:], labs[n_train:], prep=prep)
    cached_val = CachedDataset(val, CacheBudget(2**30))
    predict_and_score(model, cached_val, "segmentation", prep, 8, device)
    v = interleaved({"uncached": lambda: predict_and_score(model, val, "segmentation", prep, 8,
                                                           device),
                     "cached": lambda: predict_and_score(model, cached_val, "segmentation",
                                                         prep, 8, device)}, device, rounds, 0)
    item_kib = (224 * 224 * 5) / 1024
    return [{"name": f"finetune_step_cache_512sq_small_{source}",
             "uncached_s": round(step["uncached"], 4),
             "cached_s": round(step["cached"], 4),
             "steps_per_s": {"uncached": round(1 / step["uncached"], 3),
                             "cached": round(1 / step["cached"], 3)},
             "ratio": round(paired_ratio(times["uncached"], times["cached"]), 3),
             "ratio_meaning": "uncached step s / cached step s, median of per-round pairs "
                              "(> 1: cache faster)",
             "cpu_s": {k: round(v, 4) for k, v in step_cpu.items()},
             "ratio_cpu": round(paired_ratio(cpu["uncached"], cpu["cached"]), 3),
             "batch": batch, "slices": n_train, "cache_kib_per_slice": round(item_kib, 1),
             "source": source,
             "prepare_ms_per_item": {k: round(v, 3) for k, v in item_ms.items()},
             "prepare_share_of_uncached_step": round(
                 batch * (item_ms["uncached"] - item_ms["cached"]) / 1000 / step["uncached"], 4),
             "env": environment(device), "time": time.time()},
            {"name": "finetune_validation_cache_512sq_small_array",
             "uncached_s": round(v["uncached"], 4), "cached_s": round(v["cached"], 4),
             "ratio": round(v["uncached"] / v["cached"], 3),
             "ratio_meaning": "uncached validation s / cached validation s (> 1: cache faster)",
             "slices": n_val, "env": environment(device), "time": time.time()}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=24, help="training slices (default 24)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per run (default 12)")
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)
    records = []
    for source in ("array", "csv_png"):
        records += bench_finetune_cache(args.slices, 8, args.steps, args.batch, source=source)
    report(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
