"""MAE pretraining step: ``--fast`` (encoder on visible tokens) vs the default (dense,
official semantics), interleaved in one process; also the encoder alone.

    python -m benchmarks.bench_mae_fast [--device cpu] [--batch 2] [--rounds 9]

Appends JSON lines to ``benchmarks/results/latest.jsonl``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from training.models import build_model
from training.models.mae_fast import forward_encoder_fast
from training.runtime.device import flush_denormals
from training.runtime.optim import build_optimizer

from .common import count_flops, environment, interleaved, report, sync


def bench_mae_fast(device, batch: int, rounds: int, preset: str = "vismae") -> list[dict]:
    flush_denormals(device)  # as the pretraining loop does
    torch.manual_seed(0)
    mae = build_model("mae", preset).to(device).train()
    opt = build_optimizer(mae, 1e-4)
    x = torch.rand(batch, 1, mae.cfg.img_size, mae.cfg.img_size, device=device)
    side = mae.cfg.img_size // mae.cfg.patch_size
    mask = mae.random_mask(batch, (side, side), device)  # the same mask for both modes

    def step(fast: bool):
        mae.fast = fast
        opt.zero_grad(set_to_none=True)
        mae(x, mask=mask)[0].backward()
        opt.step()

    def encoder(fast: bool):
        with torch.no_grad():
            tokens = mae.patch_embed(x)
            if fast:
                return forward_encoder_fast(mae, tokens, mask)
            m = mask.view(batch, side, side, 1).bool()
            return mae.forward_encoder(torch.where(m, mae.mask_token.view(1, 1, 1, -1), tokens))[0]

    flops = {}
    for fast in (False, True):
        mae.fast = fast
        flops[fast] = count_flops(lambda: mae(x, mask=mask)[0].backward())  # noqa: B023
    opt.zero_grad(set_to_none=True)
    # paired rounds, ABBA order: the per-round ratio is robust to load drifting between rounds
    fns = {"dense": lambda: step(False), "fast": lambda: step(True)}
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for r in range(rounds):
        for name in (("dense", "fast") if r % 2 == 0 else ("fast", "dense")):
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    ratios = [d / f for d, f in zip(times["dense"], times["fast"], strict=True)]
    t = {k: statistics.median(v) for k, v in times.items()}
    t |= interleaved({"enc_dense": lambda: encoder(False), "enc_fast": lambda: encoder(True)},
                     device, rounds)
    mae.fast = False
    return [{"name": "mae_step_fast_vs_default", "default_s": round(t["dense"], 4),
             "fast_s": round(t["fast"], 4), "ratio": round(statistics.median(ratios), 3),
             "ratio_meaning": "median over paired rounds of default step time / --fast step "
                              "time (target >= 1.4)",
             "ratio_of_medians": round(t["dense"] / t["fast"], 3),
             "round_ratios": [round(r, 3) for r in ratios],
             "encoder_forward_ratio": round(t["enc_dense"] / t["enc_fast"], 3),
             "gflop_step": {"default": round(flops[False] / 1e9, 2),
                            "fast": round(flops[True] / 1e9, 2)},
             "preset": preset, "mask_ratio": mae.cfg.mask_ratio, "batch": batch,
             "env": environment(device)}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_mae_fast", description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--preset", default="vismae")
    args = p.parse_args(argv)
    records = bench_mae_fast(torch.device(args.device), args.batch, args.rounds, args.preset)
    report(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
