"""Out-of-distribution score: how far an input's encoder features lie from the training data's.

VIS-MAE's natural score would be the MAE's masked-reconstruction error, but a fine-tuned
segmenter or classifier no longer carries the MAE decoder. Every one of our models does
carry the Swin encoder, so the score here is a feature-statistics one: the bottleneck
tokens (the output of the last encoder stage) are average-pooled per slice, and the
slice's score is the mean squared z-score of those pooled features against the mean and
standard deviation recorded on the training data (a diagonal Mahalanobis distance,
per feature). It is reported *relative* to the training data: divided by the 95th
percentile of the training slices' own scores, so ``<= 1`` is typical of what the model
was trained on and values well above 1 mean "this input does not look like the training
data" (the prediction is then not to be trusted, whatever its confidence).

The reference lives in the model card, ``provenance["ood_reference"]`` (written by
``scripts/ood_reference.py`` for the built-in models). A model without one (a fine-tuned
version, an imported file) gets no score, never a made-up one. Computing the score costs
one forward hook and a (B, C) reduction per batch: nothing measurable beside the model.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# torch is imported inside the functions that need it: the widgets import ``summary`` on
# the GUI thread

OOD_KEY = "ood_reference"
METHOD = "bottleneck-pooled-diag-mahalanobis/1"
#: a study whose median slice lies beyond the training slices' 95th percentile is flagged
FLAG_AT = 1.0


def reference_of(card) -> dict | None:
    """The card's OOD reference (``provenance.ood_reference``) if it is one we can use."""
    ref = (getattr(card, "provenance", None) or {}).get(OOD_KEY)
    if not isinstance(ref, dict) or ref.get("method") != METHOD:
        return None
    return ref


class FeatureTap:
    """Collect pooled bottleneck features of every forward pass of ``model`` (a Swin
    U-Net, classifier or MAE encoder: anything with ``layers``, the encoder stages)."""

    def __init__(self, model):
        self.features: list = []
        self._handle = model.layers[-1].register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        self.features.append(output.float().mean(dim=(1, 2)).detach())  # (B, C)

    def take(self):
        """The features collected since the last call, a (B, C) tensor on their device."""
        import torch

        out = torch.cat(self.features) if self.features else torch.zeros(0)
        self.features = []
        return out

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_scores(features, mean, std) -> np.ndarray:
    """(N, C) pooled features -> (N,) mean squared z-score against ``mean`` / ``std``."""
    import torch

    f = torch.as_tensor(features, dtype=torch.float32).cpu()
    mu = torch.as_tensor(mean, dtype=torch.float32)
    sd = torch.as_tensor(std, dtype=torch.float32)
    if f.ndim != 2 or f.shape[1] != mu.numel():
        raise ValueError(f"features of shape {tuple(f.shape)} do not match a reference of "
                         f"{mu.numel()} features")
    return (((f - mu) / sd) ** 2).mean(1).numpy()


def slice_scores(features, ref: dict) -> np.ndarray:
    """(N,) relative OOD scores: raw score / the training slices' 95th percentile."""
    return raw_scores(features, ref["mean"], ref["std"]) / float(ref["score_p95"])


def make_reference(features, data: str) -> dict:
    """The card entry from the pooled features (N, C) of the model's training-like data."""
    import torch

    f = torch.as_tensor(features, dtype=torch.float64).cpu()
    if f.ndim != 2 or f.shape[0] < 8:
        raise ValueError(f"need at least 8 feature vectors (N, C), got {tuple(f.shape)}")
    mean = f.mean(0)
    std = f.std(0)
    std = std + 1e-3 * float(std.mean()) + 1e-8  # no division by a constant feature
    raw = raw_scores(f, mean, std)
    return {"method": METHOD, "layer": "encoder bottleneck (last stage), mean over tokens",
            "n_slices": int(f.shape[0]), "data": data,
            "mean": [float(f"{v:.6g}") for v in mean.tolist()],
            "std": [float(f"{v:.6g}") for v in std.tolist()],
            "score_median": float(f"{np.median(raw):.6g}"),
            "score_p95": float(f"{np.percentile(raw, 95):.6g}")}


def summary(scores: Iterable[float] | None) -> str:
    """One line for a status label: the median relative score over the slices."""
    if scores is None:
        return "OOD score: n/a (the model card has no training reference)"
    s = np.asarray(list(scores), dtype=np.float64)
    if not s.size:
        return "OOD score: n/a"
    med = float(np.median(s))
    verdict = ("UNLIKE THE TRAINING DATA: do not trust this result" if med > FLAG_AT
               else "like the training data")
    return f"OOD score {med:.2f} (training data ≤ 1; {verdict})"

