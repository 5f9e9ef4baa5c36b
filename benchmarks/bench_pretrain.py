"""Pretraining throughput: our step vs the official semantics built the naive way, and
the data loader vs the model.

* ``naive``: the same MAE step, but its mask drawn like the official code does it —
  a Python loop over the batch, ``np.setdiff1d`` on the host, then copies back.
* ``loader``: images/s of the DataLoader over prepared shards (what feeds the step),
  which must far exceed the model's images/s.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.models import build_model
from training.runtime.optim import build_optimizer

from .common import environment, interleaved


def naive_official_mask(batch: int, units_side: int, unit: int, ratio: float,
                        device) -> torch.Tensor:
    """Official semantics, official way: per-sample loop with host-side set differences."""
    n_units = units_side * units_side
    keep = int(n_units * (1 - ratio))
    side = units_side * unit
    masks = []
    for _ in range(batch):
        noise = torch.rand(n_units, device=device)
        kept = torch.argsort(noise)[:keep].cpu().numpy()  # device -> host sync
        masked_units = np.setdiff1d(np.arange(n_units), kept)
        m = np.zeros((side, side), np.float32)
        for u in masked_units:
            r, c = divmod(int(u), units_side)
            m[r * unit:(r + 1) * unit, c * unit:(c + 1) * unit] = 1
        masks.append(torch.from_numpy(m.reshape(-1)).to(device))  # host -> device copy
    return torch.stack(masks)


def bench_naive_masking(device, batch: int, rounds: int, preset: str = "vismae") -> list[dict]:
    torch.manual_seed(0)
    mae = build_model("mae", preset).to(device).train()
    opt = build_optimizer(mae, 1e-4)
    x = torch.rand(batch, 1, 224, 224, device=device)

    def step(mask_fn):
        opt.zero_grad(set_to_none=True)
        loss, _, _ = mae(x, mask=mask_fn())
        loss.backward()
        opt.step()

    ours = lambda: step(lambda: None)  # noqa: E731 (the model draws its mask on the device)
    naive = lambda: step(lambda: naive_official_mask(batch, 14, 4, 0.75, device))  # noqa: E731
    mask_ours = lambda: mae.random_mask(batch, (56, 56), device)  # noqa: E731
    mask_naive = lambda: naive_official_mask(batch, 14, 4, 0.75, device)  # noqa: E731
    t = interleaved({"ours": ours, "naive": naive, "mask_ours": mask_ours,
                     "mask_naive": mask_naive}, device, rounds)
    return [{"name": "mae_step_vs_naive_official_masking",
             "ours_images_per_s": round(batch / t["ours"], 2),
             "naive_images_per_s": round(batch / t["naive"], 2),
             "ratio": round(t["naive"] / t["ours"], 3),
             "masking_ms": {"ours": round(t["mask_ours"] * 1e3, 3),
                            "naive": round(t["mask_naive"] * 1e3, 3)},
             "ratio_meaning": "naive step time / our step time (> 1: ours is faster)",
             "batch": batch, "env": environment(device)}]


def bench_loader(device, batch: int, workers: int = 2, n: int = 512) -> list[dict]:
    """DataLoader images/s over uint8 shards vs the MAE step's images/s."""
    from training.pretrain.data import MANIFEST, SHARD_FORMAT, EpochSampler, ShardDataset

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        rng = np.random.default_rng(0)
        np.save(root / "shard-00000.npy", rng.integers(0, 255, (n, 224, 224), dtype=np.uint8))
        (root / MANIFEST).write_text(
            f'{{"format": "{SHARD_FORMAT}", "image_size": 224, "shards": '
            f'[{{"file": "shard-00000.npy", "count": {n}, "sources": []}}]}}')
        ds = ShardDataset(root)
        sampler = EpochSampler(len(ds))
        loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                            drop_last=True)
        t = time.perf_counter()
        seen = sum(x.shape[0] for x, _, _ in loader)
        loader_ips = seen / (time.perf_counter() - t)
    torch.manual_seed(0)
    mae = build_model("mae", "vismae").to(device).train()
    opt = build_optimizer(mae, 1e-4)
    x = torch.rand(batch, 1, 224, 224, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        mae(x)[0].backward()
        opt.step()
    step_s = interleaved({"step": step}, device, 3)["step"]
    model_ips = batch / step_s
    return [{"name": "loader_vs_model_images_per_s", "loader_images_per_s": round(loader_ips, 1),
             "model_images_per_s": round(model_ips, 2), "ratio": round(loader_ips / model_ips, 1),
             "ratio_meaning": "loader images/s / model images/s (must be >> 1)",
             "workers": workers, "batch": batch, "env": environment(device)}]


def bench_masking_at_paper_batch(device, batch: int = 640, rounds: int = 5) -> list[dict]:
    """Mask drawing alone at the paper's per-GPU batch (640): vectorised vs per-sample loop."""
    from training.models.masking import random_window_mask

    t = interleaved({"ours": lambda: random_window_mask(batch, (56, 56), 4, 0.75, device),
                     "naive": lambda: naive_official_mask(batch, 14, 4, 0.75, device)},
                    device, rounds)
    return [{"name": "masking_at_batch_640", "ours_ms": round(t["ours"] * 1e3, 3),
             "naive_ms": round(t["naive"] * 1e3, 3), "ratio": round(t["naive"] / t["ours"], 1),
             "ratio_meaning": "naive mask time / ours", "batch": batch, "env": environment(device)}]
