"""AdamW step kernels on the paper-size U-Net, timed interleaved in one process:
per-tensor loop, ``foreach`` (the previous default) and ``fused`` (the default where torch
ships it). Ratio = foreach seconds / fused seconds (> 1: fused is faster).

    python -m benchmarks.bench_optim [--device cuda] [--rounds 7]
"""
from __future__ import annotations

import argparse
import time

import torch

from training.models import build_model
from training.runtime.optim import AdamW, _fusable, param_groups

from .common import environment, interleaved, report


def bench_optimizer_step(device, rounds: int = 7) -> list[dict]:
    torch.manual_seed(0)
    model = build_model("segmentation", "vismae", num_classes=2).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    n_params = sum(p.numel() for p in params)
    kinds = {"loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True, fused=False)}
    if all(_fusable(p) for p in params):
        kinds["fused"] = dict(fused=True)
    opts = {k: AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95), **kw)
            for k, kw in kinds.items()}
    t = interleaved({k: o.step for k, o in opts.items()}, device, rounds)
    default = AdamW(param_groups(model, 0.05), lr=1e-4)
    default_kind = "fused" if default.param_groups[0].get("fused") is not False and \
        all(_fusable(p) for p in params) else "foreach"
    best = "fused" if "fused" in t else "foreach"
    return [{"name": "adamw_step_paper_unet", **{f"{k}_s": round(v, 5) for k, v in t.items()},
             "ratio": round(t["foreach"] / t[best], 3),
             "ratio_loop": round(t["loop"] / t[best], 3),
             "ratio_meaning": f"foreach (previous default) s / {best} s; ratio_loop: "
                              f"per-tensor loop s / {best} s (> 1: {best} faster)",
             "default": default_kind, "params_m": round(n_params / 1e6, 2),
             "env": environment(device), "time": time.time()}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_optim", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    records = bench_optimizer_step(torch.device(args.device), args.rounds)
    report(records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
