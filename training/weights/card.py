"""The JSON model card that travels with every napari-vismae checkpoint."""
from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass, field

from training.data.preprocessing import Preprocessing
from training.models.config import SwinConfig
from training.weights.card_schema import validate_card_dict

CARD_FORMAT = "napari-vismae/1"

# Distinct, colour-blind-friendly defaults (Okabe-Ito); background is transparent.
DEFAULT_COLORS = ["#00000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2",
                  "#D55E00", "#CC79A7", "#999999"]


def default_classes(num_classes: int, task: str) -> list[dict]:
    names = (["background"] + [f"class {i}" for i in range(1, num_classes)]
             if task == "segmentation" else [f"class {i}" for i in range(num_classes)])
    return [{"index": i, "name": n, "color": DEFAULT_COLORS[i % len(DEFAULT_COLORS)]}
            for i, n in enumerate(names)]


def software_versions() -> dict:
    import torch

    from training import __version__
    return {"napari_vismae": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


# Organs and combined regions (DICOM BodyPartExamined terms, lower case, no spaces) that lie
# inside a body region a card may name: a pancreas CT is an abdominal CT.
REGION_PARTS = {
    "abdomen": ("pancreas", "liver", "kidney", "spleen", "gallbladder", "adrenal", "stomach",
                "bowel", "colon", "duodenum", "abdomenpelvis", "abdpelvis", "chestabdomen",
                "chestabdpelvis", "abd"),
    "chest": ("lung", "heart", "thorax", "breast", "chestabdomen", "chestabdpelvis"),
    "head": ("brain", "skull", "headneck", "orbit", "sinus", "iac"),
    "pelvis": ("bladder", "prostate", "uterus", "ovary", "hip", "abdomenpelvis", "abdpelvis",
               "chestabdpelvis"),
}


@dataclass
class ModelCard:
    """What a checkpoint is, what it expects as input, and where it came from."""

    name: str
    task: str  # "mae" | "segmentation" | "classification"
    architecture: dict  # SwinConfig.to_dict()
    num_classes: int | None = None
    classes: list[dict] = field(default_factory=list)  # [{"index", "name", "color"}]
    preprocessing: dict = field(default_factory=lambda: Preprocessing().to_dict())
    provenance: dict = field(default_factory=dict)  # parent, data, metrics, created, versions
    description: str = ""
    weights_sha256: str = ""
    format: str = CARD_FORMAT
    # what the model was trained on: {"modalities": ["CT"], "body_regions": ["abdomen"]};
    # empty = not stated (modalities then fall back to preprocessing.modality)
    domain: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task != "mae" and self.num_classes and not self.classes:
            self.classes = default_classes(self.num_classes, self.task)
        self.provenance.setdefault(
            "created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        self.provenance.setdefault("versions", software_versions())

    @property
    def config(self) -> SwinConfig:
        return SwinConfig.from_dict(self.architecture)

    @property
    def prep(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.classes, key=lambda c: c["index"])]

    @property
    def modalities(self) -> list[str]:
        """Modalities the model was trained on (upper case); empty = not stated."""
        mods = self.domain.get("modalities") or (
            [self.preprocessing.get("modality")] if self.preprocessing.get("modality") else [])
        return [str(m).upper() for m in mods]

    @property
    def body_regions(self) -> list[str]:
        """Body regions the model was trained on (lower case); empty = not stated."""
        return [str(r).lower() for r in self.domain.get("body_regions") or []]

    def domain_mismatch(self, modality: str | None, body_region: str | None = None) -> str | None:
        """Why an image of ``modality`` / ``body_region`` (e.g. DICOM Modality and
        BodyPartExamined) is outside what this model was trained on, or None.

        Unknown values (None, "", "OT") and unstated card fields never mismatch.
        """
        reasons = []
        mod = (modality or "").strip().upper()
        if mod and mod != "OT" and self.modalities and mod not in self.modalities:
            reasons.append(f"the image is {mod}, the model was trained on "
                           f"{'/'.join(self.modalities)}")
        region = "".join(ch for ch in (body_region or "").lower() if ch.isalnum())
        if region and self.body_regions and not any(
                r.replace(" ", "") in region or region in r.replace(" ", "")
                or region in REGION_PARTS.get(r.replace(" ", ""), ())
                for r in self.body_regions):
            reasons.append(f"the image shows {body_region.strip().lower()}, the model was "
                           f"trained on {'/'.join(self.body_regions)}")
        return "; ".join(reasons) or None

    def chance_warning(self) -> str | None:
        """For a classifier: a message if its recorded validation ROC AUC cannot be told
        apart from chance (the 95 % interval of Hanley & McNeil, classes taken as balanced,
        reaches 0.5), else None. Cards without metrics give None."""
        if self.task != "classification":
            return None
        prov = self.provenance or {}
        auc = (prov.get("metrics") or {}).get("val_auc")
        n = (prov.get("data") or {}).get("val_images")
        if not isinstance(auc, (int, float)) or not isinstance(n, int) or n < 2:
            return None
        auc = float(auc)
        n1 = n2 = n / 2
        q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
        se = ((auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n2 - 1) * (q2 - auc * auc))
              / (n1 * n2)) ** 0.5
        if auc - 1.96 * se > 0.5:
            return None
        return (f"validation ROC AUC {auc:.2f} on {n} images is not distinguishable from "
                f"chance (0.5): do not base a decision on this model")

    def to_dict(self) -> dict:
        out = {"format": self.format, "name": self.name, "task": self.task,
               "description": self.description, "architecture": self.architecture,
               "num_classes": self.num_classes, "classes": self.classes,
               "preprocessing": self.preprocessing, "provenance": self.provenance,
               "weights_sha256": self.weights_sha256}
        if self.domain:
            out["domain"] = self.domain
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "model card") -> ModelCard:
        validate_card_dict(d, source)  # types, ranges and sizes, before anything is built
        keys = {"name", "task", "architecture", "num_classes", "classes", "preprocessing",
                "provenance", "description", "weights_sha256", "format", "domain"}
        return cls(**{k: v for k, v in d.items() if k in keys})
