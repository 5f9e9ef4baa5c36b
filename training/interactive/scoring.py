"""Honest scores of a fine-tuning run: per-class Dice (or recall) pooled over slices, with
the number of slices behind each class, and the one-line summary the user reads."""
from __future__ import annotations

import numpy as np
import torch

from training.interactive.corrections import MIN_VALIDATION_SLICES


def class_stats(model, data, task, prep, device, num_classes) -> np.ndarray:
    """Per class: (intersection, predicted, true, slices holding it) for segmentation,
    (correct, 0, true, true) for classification; summed over ``data``."""
    from training.data.preprocessing import to_model_input

    out = np.zeros((num_classes, 4), np.int64)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(data), 8):
                items = [data[i] for i in range(start, min(start + 8, len(data)))]
                x = torch.stack([it[0] for it in items]).to(device)
                y = torch.stack([it[1] for it in items]).to(device)
                pred = model(to_model_input(x, prep)).float().argmax(1)
                for c in range(num_classes):
                    t, p = y == c, pred == c
                    if task == "segmentation":
                        out[c] += [int((t & p).sum()), int(p.sum()), int(t.sum()),
                                   int(t.flatten(1).any(1).sum())]
                    else:
                        k = int(t.sum())
                        out[c] += [int((t & p).sum()), 0, k, k]
    finally:
        model.train(was)
    return out


def class_scores(stats: np.ndarray, task: str) -> dict[int, float]:
    """Dice (segmentation, foreground classes present) or recall (classification) per class."""
    first = 1 if task == "segmentation" else 0
    out = {}
    for c in range(first, len(stats)):
        inter, psum, tsum, _ = stats[c]
        if tsum > 0:
            out[c] = float(2 * inter / (psum + tsum)) if task == "segmentation" \
                else float(inter / tsum)
    return out


def score_of(stats: np.ndarray, task: str) -> float | None:
    if task == "classification":
        total = stats[:, 2].sum()
        return float(stats[:, 0].sum() / total) if total else None
    per = class_scores(stats, task)
    return float(np.mean(list(per.values()))) if per else None


def per_class(stats, start_stats, task, names) -> list[dict]:
    run, base = class_scores(stats, task), class_scores(start_stats, task)
    return [{"index": c, "name": names[c] if c < len(names) else str(c), "score": run[c],
             "start": base.get(c), "n_slices": int(stats[c][3])} for c in sorted(run)]


def summary(how, metric, start, score, n_scored, n_items) -> str:
    if how == "too-few":
        return (f"too few corrected slices to validate ({n_items}; at least "
                f"{MIN_VALIDATION_SLICES} are needed), not validated")
    if how == "none" or score is None:
        return "not validated (validation off)" if how == "none" else "not validated"
    what = {"cv": f"{n_scored}-slice cross-validated", "val": f"{n_scored} held-out slice(s)"}
    kind = metric.split("_")[0]
    return (f"{metric.split('_')[1]} {start:.3f} -> {score:.3f} ({what[kind]}, starting model "
            "on the same slices)")
