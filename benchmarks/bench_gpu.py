"""GPU figures for the paper model (VIS-MAE Swin-UNet / MAE, 224 px), in one run:

* slice latency: one 512² CT slice through the engine (``segment_steps``: preprocessing,
  forward, logits resized to 512², argmax), batch 1;
* 300-slice CT: a 300 × 512² volume through the same path (batch ``--seg-batch``);
* pretraining: MAE train steps (bf16 autocast, fused AdamW), images/s and MFU;

each in bf16 eager and bf16 with ``torch.compile`` (model forward compiled). MFU = model
FLOPs (forward + backward, counted by ``torch.utils.flop_counter``) / time / the GPU's peak
dense bf16 FLOP/s (a table of common GPUs, or ``--peak-tflops``).

    python benchmarks/bench_gpu.py [--batch 128] [--no-compile] [--steps 20]

Without a CUDA GPU it says so and exits 0 (CI never has one); ``--cpu-smoke`` runs every
code path once on the CPU with the tiny preset (what the test suite checks). Results are appended to
``benchmarks/results/latest.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a substring of the device name
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("A10G", 70.0),
                    ("A10", 125.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
                    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("A6000", 155.0)]

NO_GPU = "bench_gpu: no CUDA GPU found; this benchmark measures GPU figures only, nothing to do."


def peak_tflops(name: str) -> float | None:
    for key, v in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return v
    return None


def _drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls (compilation happens there)."""
    import statistics
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_segmentation(device, compiled: bool, seg_batch: int, repeats: int,
                       preset: str = "vismae", slices: int = 300) -> dict:
    import numpy as np

    from training.interactive.inference import segment_steps
    from training.models import build_model
    from training.weights.card import ModelCard

    torch.manual_seed(0)
    model = build_model("segmentation", preset, num_classes=2).to(device).eval()
    card = ModelCard(name="paper-size random", task="segmentation",
                     architecture=model.cfg.to_dict(), num_classes=2)
    run_model = torch.compile(model) if compiled else model
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1500, (slices, 512, 512), dtype=np.int16)
    one = lambda: _drain(segment_steps(run_model, card, ct[:1], batch_size=1,  # noqa: E731
                                       device=device, precision="bf16", modality="CT",
                                       window=(40.0, 400.0)))
    vol = lambda: _drain(segment_steps(run_model, card, ct, batch_size=seg_batch,  # noqa: E731
                                       device=device, precision="bf16", modality="CT",
                                       window=(40.0, 400.0)))
    return {"slice_latency_s": round(_timed(one, device, max(repeats, 10)), 5),
            f"ct{slices}_s": round(_timed(vol, device, repeats, warmup=1), 4)}


def bench_pretraining(device, compiled: bool, batch: int, steps: int,
                      preset: str = "vismae") -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from training.models import build_model
    from training.runtime.optim import build_optimizer

    torch.manual_seed(0)
    mae = build_model("mae", preset).to(device).train()
    opt = build_optimizer(mae, 1.5e-4)
    fwd = torch.compile(mae) if compiled else mae
    x = torch.randn(batch, 1, 224, 224, device=device)
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = fwd(x, generator=g)[0]
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            mae(x, generator=g)[0].backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    s = _timed(step, device, steps, warmup=3)
    out = {"images_per_s": round(batch / s, 1), "step_s": round(s, 4),
           "tflop_per_step": round(flops / 1e12, 3), "achieved_tflops": round(flops / s / 1e12, 1)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_gpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="MAE pretraining batch (default 128)")
    p.add_argument("--seg-batch", type=int, default=32,
                   help="slices per forward for the 300-slice CT (default 32)")
    p.add_argument("--steps", type=int, default=20, help="timed pretraining steps (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="timed 300-slice runs (default 3)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak for MFU (default: from a table by name)")
    p.add_argument("--no-write", action="store_true", help="print only, append nothing")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run every code path once on the CPU (tiny preset, 2 slices, no "
                        "compile, nothing written): a check of the script, not a benchmark")
    args = p.parse_args(argv)
    preset, slices = "vismae", 300
    if args.cpu_smoke:
        device, name, preset, slices = torch.device("cpu"), "CPU smoke run", "tiny", 2
        args.batch, args.seg_batch, args.steps, args.repeats = 2, 2, 1, 1
        args.no_compile, args.no_write = True, True
    elif not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    from benchmarks.common import environment, write

    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    print(f"bench_gpu on {name} (peak bf16 {peak or 'unknown'} TFLOP/s), torch {torch.__version__}",
          flush=True)
    records = []
    for compiled in ([False] if args.no_compile else [False, True]):
        mode = "bf16+compile" if compiled else "bf16"
        try:
            rec = {"name": f"gpu_paper_model_{mode.replace('+', '_')}", "mode": mode,
                   **bench_segmentation(device, compiled, args.seg_batch, args.repeats,
                                        preset, slices),
                   **bench_pretraining(device, compiled, args.batch, args.steps, preset),
                   "batch": args.batch, "seg_batch": args.seg_batch}
        except Exception as e:  # noqa: BLE001 - report one mode's failure, keep the other
            print(f"{mode}: failed: {type(e).__name__}: {e}", flush=True)
            continue
        if peak and device.type == "cuda":
            rec["mfu"] = round(rec["achieved_tflops"] / peak, 4)
        rec["peak_bf16_tflops"] = peak
        rec["env"] = environment(device)
        rec["time"] = time.time()
        records.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "env"}), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if records and not args.no_write:
        print(f"appended to {write(records)}")
    return 0 if records else 1


if __name__ == "__main__":
    raise SystemExit(main())
