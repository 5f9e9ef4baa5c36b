"""Our VIS-MAE models against timm's Swin-T, timed interleaved in one process.

* segmentation inference and train step, FLOP-normalised: ratio = our seconds per
  FLOP / timm's seconds per FLOP (≤ 1.0 means our kernels are as efficient);
* MAE pretraining step: images/s, and the share of the step spent drawing masks;
* ``python -m benchmarks.bench_models --cpu-batch``: CPU-seconds per slice and peak
  memory of inference at batch 1/2/4/8 on 512² slices, built-in and paper-size models
  (how ``training.interactive.CPU_BATCH`` was chosen).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

from training.models import build_model
from training.models.masking import random_window_mask
from training.runtime.optim import build_optimizer

from .common import count_flops, environment, interleaved, paired_ratio, report


def _train_step(model, opt, x, loss_fn):
    opt.zero_grad(set_to_none=True)
    loss_fn(model, x).backward()
    opt.step()


def _compare(name: str, ours, peer, device, batch: int, rounds: int) -> list[dict]:
    """Inference and train step of ``ours`` vs ``peer`` on the same input, interleaved."""
    x = torch.rand(batch, 3, 224, 224, device=device)
    loss = lambda m, x: m(x).float().logsumexp(1).mean()  # noqa: E731 (any scalar works)
    records = []
    ours.eval(), peer.eval()
    with torch.no_grad():
        flops = {"ours": count_flops(lambda: ours(x)), "peer": count_flops(lambda: peer(x))}
        cpu: dict = {}
        t = interleaved({"ours": lambda: ours(x), "peer": lambda: peer(x)}, device, rounds,
                        raw=True, cpu=cpu)
    records.append(_record(f"{name}_inference_vs_timm_swin_t", t, flops, batch, device, cpu))
    ours.train(), peer.train()
    opt_o, opt_p = build_optimizer(ours, 1e-4), build_optimizer(peer, 1e-4)
    flops = {"ours": count_flops(lambda: loss(ours, x).backward()),
             "peer": count_flops(lambda: loss(peer, x).backward())}
    cpu = {}
    t = interleaved({"ours": lambda: _train_step(ours, opt_o, x, loss),
                     "peer": lambda: _train_step(peer, opt_p, x, loss)}, device, rounds,
                    raw=True, cpu=cpu)
    records.append(_record(f"{name}_train_step_vs_timm_swin_t", t, flops, batch, device, cpu))
    return records


def _timm_swin_t(device, drop_path_rate: float = 0.0):
    """timm's Swin-T, with our models' stochastic depth so train steps do the same work."""
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=2,
                             drop_path_rate=drop_path_rate).to(device)


def bench_segmentation(device, batch: int, rounds: int) -> list[dict]:
    """Our U-Net (paper layout) vs timm's Swin-T classifier, FLOP-normalised."""
    torch.manual_seed(0)
    ours = build_model("segmentation", "vismae", num_classes=2).to(device)
    return _compare("segmentation", ours, _timm_swin_t(device, ours.cfg.drop_path_rate), device,
                    batch, rounds)


def bench_same_architecture(device, batch: int, rounds: int) -> list[dict]:
    """Our classifier built with Swin-T's depths (2,2,6,2) IS timm's Swin-T: same FLOPs,
    so this ratio isolates kernel efficiency from architecture."""
    torch.manual_seed(0)
    ours = build_model("classification", "vismae", num_classes=2, depths=(2, 2, 6, 2)).to(device)
    return _compare("swin_t_layout", ours, _timm_swin_t(device, ours.cfg.drop_path_rate), device,
                    batch, rounds)


def _plain_head(model, x):
    """The U-Net head in the plain order (expand, per-pixel LayerNorm, 1×1 head): the
    reference the folded head (``SwinUNet._folded_head``) is timed against."""
    fpe = model.final_patch_expanding
    B, h, w, _ = x.shape
    s = fpe.scale
    y = torch.nn.functional.linear(fpe.norm(fpe.expand(x).view(B, h, w, s * s, -1)),
                                   model.head.weight.flatten(1))
    return y.view(B, h, w, s, s, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, h * s, w * s)


def bench_head_fold(device, batch: int, rounds: int) -> list[dict]:
    """The whole paper U-Net with the folded head vs the plain LayerNorm-then-head order,
    inference and train step (forward + backward), interleaved. Ratio = plain s / folded s."""
    torch.manual_seed(0)
    m = build_model("segmentation", "vismae", num_classes=2).to(device)
    x = torch.rand(batch, 3, 224, 224, device=device)
    fold = lambda: m(x)  # noqa: E731
    plain = lambda: _plain_head(m, m.forward_features(x))  # noqa: E731
    m.eval()
    c_inf, c_tr = {}, {}
    with torch.no_grad():
        t_inf = interleaved({"plain": plain, "folded": fold}, device, rounds, raw=True,
                            cpu=c_inf)
    m.train()
    back = lambda f: (lambda: f().float().logsumexp(1).mean().backward())  # noqa: E731
    t_tr = interleaved({"plain": back(plain), "folded": back(fold)}, device, rounds, raw=True,
                       cpu=c_tr)
    out = []
    for kind, raw, cpu in (("inference", t_inf, c_inf), ("train_step", t_tr, c_tr)):
        t = {k: statistics.median(v) for k, v in raw.items()}
        out.append({"name": f"segmentation_{kind}_folded_vs_plain_head",
                    "plain_s": round(t["plain"], 5), "folded_s": round(t["folded"], 5),
                    "ratio": round(paired_ratio(raw["plain"], raw["folded"]), 3),
                    "ratio_cpu_time": round(paired_ratio(cpu["plain"], cpu["folded"]), 3),
                    "ratio_meaning": "whole U-Net s with LayerNorm-then-head / with the "
                                     "folded head, median of per-round pairs (> 1: fold "
                                     "faster)",
                    "batch": batch, "env": environment(device), "time": time.time()})
    return out


def _record(name, times, flops, batch, device, cpu=None) -> dict:
    """``times``: every round's seconds; ratio = median over rounds of the paired
    (ours / peer) seconds, FLOP-normalised; ``ratio_of_medians`` as reported before."""
    t = {k: statistics.median(v) for k, v in times.items()}
    per_flop = {k: t[k] / flops[k] for k in t}
    paired = paired_ratio(times["ours"], times["peer"]) * flops["peer"] / flops["ours"]
    return {"name": name, "ours": round(t["ours"], 5), "peer": round(t["peer"], 5),
            "unit": "s/call", "ours_gflop": round(flops["ours"] / 1e9, 2),
            "peer_gflop": round(flops["peer"] / 1e9, 2),
            "ratio": round(paired, 3),
            "ratio_of_medians": round(per_flop["ours"] / per_flop["peer"], 3),
            **({"ratio_cpu_time": round(paired_ratio(cpu["ours"], cpu["peer"])
                                        * flops["peer"] / flops["ours"], 3)}
               if cpu and device.type == "cpu" else {}),
            "rounds": len(times["ours"]),
            "ratio_meaning": "our s/FLOP over timm Swin-T s/FLOP, median of per-round paired "
                             "ratios (target <= 1.0)",
            "batch": batch, "env": environment(device)}


def bench_mae_step(device, batch: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    mae = build_model("mae", "vismae").to(device).train()
    opt = build_optimizer(mae, 1e-4)
    x = torch.rand(batch, 1, 224, 224, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    step = lambda: _train_step(mae, opt, x, lambda m, x: m(x, generator=g)[0])  # noqa: E731
    masking = lambda: random_window_mask(batch, (56, 56), 4, 0.75, device, g)  # noqa: E731
    t = interleaved({"step": step, "mask": masking}, device, rounds)
    return [{"name": "mae_pretrain_step", "images_per_s": round(batch / t["step"], 2),
             "step_s": round(t["step"], 4), "masking_s": round(t["mask"], 6),
             "masking_share": round(t["mask"] / t["step"], 5),
             "ratio_meaning": "masking_share: masking time / full train step (target <= 0.02)",
             "batch": batch, "env": environment(device), "time": time.time()}]


# -- CPU batch size of inference --------------------------------------------------------------
def _batch_models() -> dict:
    """name -> (model, card): the built-in abdominal model and the paper-size U-Net (the
    ``vismae`` preset at 224², random weights: the cost does not depend on the weights)."""
    from dataclasses import replace

    from training.weights.card import ModelCard
    from training.weights.checkpoint import load_checkpoint

    root = Path(__file__).resolve().parents[1] / "napari_vismae" / "models" / "abdomen-organs"
    model, card = load_checkpoint(root, device="cpu")
    torch.manual_seed(0)
    paper = build_model("segmentation", "vismae", num_classes=card.num_classes)
    prep = replace(card.prep, input_size=paper.cfg.img_size)
    paper_card = ModelCard(name="paper-size", task="segmentation",
                           architecture=paper.cfg.to_dict(), num_classes=card.num_classes,
                           classes=card.classes, preprocessing=prep.to_dict())
    return {"builtin": (model.eval(), card), "paper": (paper.eval(), paper_card)}


def _segment(model, card, vol, batch):
    from training.interactive.inference import run, segment_steps

    return run(segment_steps(model, card, vol, modality="CT", window=(40.0, 400.0),
                             batch_size=batch, device="cpu"))


def _peak_child(name: str, batch: int, slices: int, size: int) -> None:
    """In a fresh process: the peak RSS that segmenting ``slices`` slices at ``batch`` adds
    above the RSS with the model loaded and warm (printed as JSON; Linux /proc)."""
    model, card = _batch_models()[name]
    vol = np.random.default_rng(0).normal(40, 200, (slices, size, size)).astype(np.float32)
    _segment(model, card, vol[:1], 1)  # import / first-call costs outside the window
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    base = _status_kb("VmRSS")
    _segment(model, card, vol, batch)
    print(json.dumps({"peak_mb": round(max(_status_kb("VmHWM") - base, 0) / 1024, 1)}))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def bench_cpu_batch(batches=(1, 2, 4, 8), slices: int = 16, size: int = 512,
                    rounds: int = 3) -> list[dict]:
    """CPU-seconds and wall seconds per slice of the engine (``segment_steps``) at each
    batch size, interleaved in one process (ABBA rounds), and the peak memory each batch
    adds, each in a fresh process. Ratio = CPU-s/slice over batch 1's, median of paired rounds."""
    models = _batch_models()
    vol = np.random.default_rng(0).normal(40, 200, (slices, size, size)).astype(np.float32)
    out = []
    for name, (model, card) in models.items():
        cpu: dict = {}
        fns = {b: (lambda b=b, m=model, c=card: _segment(m, c, vol, b)) for b in batches}
        wall = interleaved(fns, torch.device("cpu"), rounds, warmup=1, raw=True, cpu=cpu)
        peaks = {}
        for b in batches:
            r = subprocess.run([sys.executable, "-m", "benchmarks.bench_models", "--peak-child",
                                name, str(b), str(slices), str(size)], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parents[1], check=True)
            peaks[b] = json.loads(r.stdout.strip().splitlines()[-1])["peak_mb"]
        for b in batches:
            out.append({
                "name": f"cpu_batch_{name}_{size}sq_b{b}", "model": name, "batch": b,
                "input_size": card.prep.input_size,
                "cpu_s_per_slice": round(statistics.median(cpu[b]) / slices, 4),
                "cpu_s_per_slice_spread": [round(min(cpu[b]) / slices, 4),
                                           round(max(cpu[b]) / slices, 4)],
                "wall_s_per_slice": round(statistics.median(wall[b]) / slices, 4),
                "ratio": round(paired_ratio(cpu[b], cpu[batches[0]]), 3),
                "ratio_meaning": f"CPU-s per slice at batch {b} / at batch {batches[0]}, "
                                 "median of paired interleaved rounds (< 1: batching pays)",
                "peak_mb": peaks[b], "slices": slices, "rounds": rounds,
                "env": environment(torch.device("cpu")), "time": time.time()})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_models", description=__doc__)
    p.add_argument("--cpu-batch", action="store_true",
                   help="CPU-s/slice and peak memory of inference at batch 1/2/4/8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--slices", type=int, default=16)
    p.add_argument("--peak-child", nargs=4, metavar=("MODEL", "BATCH", "SLICES", "SIZE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peak_child:
        name, b, n, s = args.peak_child
        _peak_child(name, int(b), int(n), int(s))
        return 0
    if args.cpu_batch:
        report(bench_cpu_batch(slices=args.slices, rounds=args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
