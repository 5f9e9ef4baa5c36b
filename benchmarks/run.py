"""Run every benchmark and append JSON lines to ``benchmarks/results/latest.jsonl``
(the GPU figures: ``python benchmarks/bench_gpu.py``).

    python -m benchmarks.run [--device cuda] [--batch 2] [--rounds 5]
"""
from __future__ import annotations

import argparse

import torch

from . import bench_finetune, bench_models, bench_optim, bench_pretrain
from .common import report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 32 on GPU")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--only", nargs="*", default=None,
                   help="subset: segmentation same mae pretrain optim finetune")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    records = []
    if not args.only or "segmentation" in args.only:
        records += bench_models.bench_segmentation(device, batch, args.rounds)
        records += bench_models.bench_head_fold(device, batch, args.rounds)
    if not args.only or "same" in args.only:
        records += bench_models.bench_same_architecture(device, batch, args.rounds)
    if not args.only or "mae" in args.only:
        records += bench_models.bench_mae_step(device, batch, args.rounds)
    if not args.only or "pretrain" in args.only:
        records += bench_pretrain.bench_naive_masking(device, batch, args.rounds)
        records += bench_pretrain.bench_loader(device, batch)
        records += bench_pretrain.bench_masking_at_paper_batch(device)
    if not args.only or "optim" in args.only:
        records += bench_optim.bench_optimizer_step(device, max(args.rounds, 7))
    if (not args.only or "finetune" in args.only) and device.type == "cpu":
        for source in ("array", "csv_png"):
            records += bench_finetune.bench_finetune_cache(source=source)
    report(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
