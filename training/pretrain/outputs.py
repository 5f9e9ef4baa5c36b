"""What a pretraining run writes besides its states: the metrics log and the sample PNGs."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from training.data.preprocessing import Preprocessing
from training.models.input_check import (  # noqa: F401 (the check lives in models/, re-exported)
    USES_INPUT_MARGIN,
    describe_check,
    input_use_check,
)
from training.models.masking import mask_to_pixels
from training.runtime.atomic import atomic_path

log = logging.getLogger("training.pretrain")


class MetricsLog:
    """JSON lines, one per logged step (rank 0 only), append-only.

    On resume the file is *truncated* (never rewritten) at the first record after the
    resumed step, so it reads as one uninterrupted run; a torn last line (a kill mid-write)
    is dropped. Any other line that is not JSON is an error naming the file and the line.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            records, offsets, end = read_metrics(path, with_offsets=True)
            cut = next((off for rec, off in zip(records, offsets, strict=True)
                        if rec.get("step", 0) > resume_step), end)
            cut = min(cut, end)
            if cut < path.stat().st_size:
                os.truncate(path, cut)
        elif resume_step is None and path.exists():
            path.unlink()
        self.file = open(path, "a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path, with_offsets: bool = False):
    """The records of a metrics log, tolerating a torn last line.

    A record counts once its newline is written (each is written with its newline in one
    call), so an unterminated or unparsable *last* line is a write cut short by a kill: it
    is dropped. A bad line anywhere else raises :class:`ValueError` naming the file and line.
    With ``with_offsets``: ``(records, byte offset of each, end of the last good line)``.
    """
    data = Path(path).read_bytes()
    records, offsets, pos, end = [], [], 0, 0
    chunks = data.split(b"\n")
    last_content = max((i for i, c in enumerate(chunks) if c.strip()), default=-1)
    for i, raw in enumerate(chunks):
        start, pos = pos, pos + len(raw) + 1
        if not raw.strip():
            if i < len(chunks) - 1:
                end = pos
            continue
        terminated = i < len(chunks) - 1
        try:
            rec = json.loads(raw) if terminated else None
            if terminated and not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == last_content:
                rec = None
            else:
                raise ValueError(f"{path}: line {i + 1} is not a metrics record ({e}); fix or "
                                 "delete that line") from None
        if rec is None:
            log.warning("%s: dropped a torn last line (a write cut short): %.60r", path, raw)
            break
        records.append(rec)
        offsets.append(start)
        end = pos
    return (records, offsets, end) if with_offsets else records


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
    records = read_metrics(path) if path.exists() else []
    return records[-1].get("loss") if records else None

