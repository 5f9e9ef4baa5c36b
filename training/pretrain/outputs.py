"""What a pretraining run writes besides its states: the metrics log and the sample PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from training.data.preprocessing import Preprocessing
from training.models.masking import mask_to_pixels
from training.runtime.atomic import atomic_path, atomic_write_text


class MetricsLog:
    """JSON lines, one per logged step (rank 0 only). On resume, lines after the resumed
    step are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        elif resume_step is None and path.exists():
            path.unlink()
        self.file = open(path, "a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def save_samples(path: Path, x: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, model,
                 prep: Preprocessing) -> None:
    """A grid: rows = up to 4 samples; columns = input, masked input, reconstruction."""
    from skimage.io import imsave

    n = min(4, x.shape[0])
    grid_hw = (x.shape[-2] // model.cfg.patch_size, x.shape[-1] // model.cfg.patch_size)
    with torch.no_grad():
        img = (x[:n, :1].float() * prep.std + prep.mean).clamp(0, 1).cpu()
        m = mask_to_pixels(mask[:n].float(), grid_hw, model.cfg.patch_size).cpu()
        rec = model.unpatchify(pred[:n].float(), grid_hw).mean(1, keepdim=True)
        rec = (rec * prep.std + prep.mean).clamp(0, 1).cpu()
        if model.cfg.norm_pix_loss:  # targets were per-patch normalised: show visible pixels
            rec = img * (1 - m) + rec * m
    rows = [torch.cat([img[i, 0], img[i, 0] * (1 - m[i, 0]) + 0.5 * m[i, 0],
                       img[i, 0] * (1 - m[i, 0]) + rec[i, 0] * m[i, 0]], dim=1) for i in range(n)]
    grid = (torch.cat(rows, dim=0).numpy() * 255).astype(np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, grid, check_contrast=False)


def _last_loss(path: Path):
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return json.loads(lines[-1])["loss"] if lines else None
