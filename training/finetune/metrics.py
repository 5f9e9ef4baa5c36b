"""Evaluation metrics: overlap scores for segmentation, ROC/PR AUC for classification.

Segmentation (on integer label maps, after argmax):

* per class c: Dice = 2TP / (2TP + FP + FN), precision = TP / (TP + FP),
  recall = TP / (TP + FN);
* a class absent from both prediction and truth scores 1 on all three (the
  official ``dice_score`` convention); any other zero denominator scores 0
  (predicting nothing where there is something, or something where there is
  nothing, is an error, never a NaN);
* "per-image" scores average the per-image values over images (the
  official test-time number at batch 1); "pooled" scores count TP/FP/FN over
  the whole set (insensitive to the empty-class convention);
* averages are over foreground classes (background excluded), as in the paper.

Classification: ROC AUC and PR AUC (average precision) via scikit-learn:
binary on the class-1 probability, otherwise one-vs-rest per class plus the
macro mean over classes where it is defined. When the truth holds a single
class the AUC is undefined: a :class:`UndefinedMetricWarning` is issued and
the value is ``None`` (JSON ``null``), never NaN.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


class UndefinedMetricWarning(UserWarning):
    """A metric that cannot be computed for this data (e.g. AUC with one class)."""


# -- segmentation ------------------------------------------------------------------------------
def confusion_matrix_labels(pred, target, num_classes: int) -> np.ndarray:
    """(C, C) pixel counts, rows = truth, columns = prediction."""
    p = np.asarray(pred).astype(np.int64).ravel()
    t = np.asarray(target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth differ in size ({p.size} vs {t.size})")
    for name, a in (("prediction", p), ("truth", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1} "
                             f"(found {a.min()}..{a.max()})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes,
                                                                               num_classes)


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    out = np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)
    return np.where(both_empty, 1.0, out)


def overlap_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class Dice, precision, recall (and TP/FP/FN) from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    empty = (tp + fp + fn) == 0
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, empty),
            "precision": _ratio(tp, tp + fp, empty),
            "recall": _ratio(tp, tp + fn, empty),
            "tp": tp, "fp": fp, "fn": fn}


def dice_per_class(pred, target, num_classes: int) -> np.ndarray:
    """Per-class Dice of one label map (or a stack pooled together)."""
    return overlap_from_confusion(confusion_matrix_labels(pred, target, num_classes))["dice"]


class SegmentationMeter:
    """Accumulates per-image and pooled overlap scores over batches of label maps."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class {i}" for i in range(num_classes)])
        self.cm = np.zeros((num_classes, num_classes), np.int64)
        self.per_image: list[dict[str, np.ndarray]] = []
        self.names: list[str] = []

    def update(self, pred, target, names: Sequence[str] | None = None) -> None:
        """pred/target: (B, H, W) or (H, W) integer arrays/tensors."""
        pred, target = _np(pred), _np(target)
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and truth {target.shape} differ in shape")
        for b in range(pred.shape[0]):
            cm = confusion_matrix_labels(pred[b], target[b], self.num_classes)
            self.cm += cm
            self.per_image.append(overlap_from_confusion(cm))
            self.names.append(names[b] if names is not None else str(len(self.names)))

    def result(self) -> dict:
        if not self.per_image:
            raise ValueError("no images were evaluated")
        pooled = overlap_from_confusion(self.cm)
        fg = slice(1, None)
        per_class = []
        for c in range(self.num_classes):
            row = {"index": c, "name": self.class_names[c],
                   "pixels_true": int(self.cm[c].sum()), "pixels_pred": int(self.cm[:, c].sum())}
            for m in ("dice", "precision", "recall"):
                row[m] = float(np.mean([s[m][c] for s in self.per_image]))
                row[f"{m}_pooled"] = float(pooled[m][c])
            per_class.append(row)
        out = {"num_images": len(self.per_image), "per_class": per_class,
               "confusion_matrix": self.cm.tolist()}
        for m in ("dice", "precision", "recall"):
            out[f"mean_{m}"] = float(np.mean([s[m][fg].mean() for s in self.per_image]))
            out[f"mean_{m}_pooled"] = float(pooled[m][fg].mean())
        return out

    def image_rows(self) -> list[dict]:
        """One row per image: mean foreground Dice and per-class Dice."""
        rows = []
        for name, s in zip(self.names, self.per_image, strict=False):
            row = {"image": name, "mean_dice": float(s["dice"][1:].mean())}
            for c in range(1, self.num_classes):
                row[f"dice_{self.class_names[c]}"] = float(s["dice"][c])
            rows.append(row)
        return rows


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# -- classification ----------------------------------------------------------------------------
def _auc_pair(y: np.ndarray, score: np.ndarray, what: str) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.min() == y.max():
        warnings.warn(f"{what}: only one class present in the truth; ROC/PR AUC undefined "
                      "(reported as null)", UndefinedMetricWarning, stacklevel=3)
        return None, None
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


def classification_metrics(y_true, probs, class_names: Sequence[str] | None = None) -> dict:
    """y_true (N,) ints, probs (N, C) class probabilities -> accuracy, confusion matrix, AUCs."""
    from sklearn.metrics import confusion_matrix

    y = _np(y_true).astype(np.int64).ravel()
    p = _np(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = {y.shape[0]}, got {p.shape}")
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinity (diverged model?)")
    C = p.shape[1]
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"labels outside 0..{C - 1} for a {C}-class model")
    names = list(class_names or [f"class {i}" for i in range(C)])
    pred = p.argmax(1)
    out = {"num_samples": int(y.size), "accuracy": float((pred == y).mean()),
           "confusion_matrix": confusion_matrix(y, pred, labels=list(range(C))).tolist(),
           "class_counts": np.bincount(y, minlength=C).tolist()}
    if C == 2:
        out["roc_auc"], out["pr_auc"] = _auc_pair(y, p[:, 1], "binary AUC")
        out["per_class"] = [{"index": i, "name": names[i]} for i in range(C)]
        return out
    per_class, rocs, prs = [], [], []
    for c in range(C):
        roc, pr = _auc_pair((y == c).astype(int), p[:, c], f"class {names[c]!r} one-vs-rest")
        per_class.append({"index": c, "name": names[c], "roc_auc": roc, "pr_auc": pr})
        if roc is not None:
            rocs.append(roc)
            prs.append(pr)
    out["per_class"] = per_class
    out["roc_auc"] = float(np.mean(rocs)) if rocs else None
    out["pr_auc"] = float(np.mean(prs)) if prs else None
    return out


def summarize_folds(results: Sequence[dict], keys: Sequence[str]) -> dict:
    """Mean and sample std over folds of scalar metrics (None values skipped, counted)."""
    out = {}
    for k in keys:
        vals = [r[k] for r in results if r.get(k) is not None]
        out[k] = {"mean": float(np.mean(vals)) if vals else None,
                  "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else (0.0 if vals else None),
                  "n": len(vals)}
    return out
