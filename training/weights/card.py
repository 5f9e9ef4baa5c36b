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

    def __post_init__(self):
        if self.task != "mae" and self.num_classes and not self.classes:
            self.classes = default_classes(self.num_classes, self.task)
        self.provenance.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
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

    def to_dict(self) -> dict:
        return {"format": self.format, "name": self.name, "task": self.task,
                "description": self.description, "architecture": self.architecture,
                "num_classes": self.num_classes, "classes": self.classes,
                "preprocessing": self.preprocessing, "provenance": self.provenance,
                "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, d: dict, source: str = "model card") -> ModelCard:
        validate_card_dict(d, source)  # types, ranges and sizes, before anything is built
        keys = {"name", "task", "architecture", "num_classes", "classes", "preprocessing",
                "provenance", "description", "weights_sha256", "format"}
        return cls(**{k: v for k, v in d.items() if k in keys})
