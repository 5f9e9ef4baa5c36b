"""Settings of the label-efficiency study: the quick (CPU) and full (GPU) presets, and the arms."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from training.finetune.recipe import PAPER, Recipe

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 0.50, 1.00)
DATASETS = ("phantoms", "mni152")

#: Fine-tuning recipes an arm can name (all start from the default-pretrained MAE);
#: "mae" is the recipe default for pretrained inits (training.finetune.recipe.PRETRAINED_DEFAULT).
RECIPES: dict[str, Recipe] = {
    "paper": PAPER,  # encoder + decoder as pretrained (the official code)
    "full_std": Recipe(transfer="full", rescale="std"),
    "encoder": Recipe(transfer="encoder"),
    "encoder_std": Recipe(transfer="encoder", rescale="std"),
    "encoder_std_llrd": Recipe(transfer="encoder", rescale="std", layer_decay=0.75),
    "encoder_std_freeze": Recipe(transfer="encoder", rescale="std", freeze_encoder_steps=20),
    "encoder_llrd": Recipe(transfer="encoder", layer_decay=0.75),
}
#: "random": random init; "mae": default pretraining + the default recipe; "mae_fast": the
#: MAE pretrained with the fast (visible-tokens-only) encoder + the default recipe; any key of
#: RECIPES: default pretraining + that recipe.
BASE_ARMS = ("random", "mae", "mae_fast")


def check_arms(arms) -> None:
    bad = [a for a in arms if a not in BASE_ARMS and a not in RECIPES]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; choose from {list(BASE_ARMS) + list(RECIPES)}")


@dataclass
class StudyConfig:
    preset: str = "small"
    input_size: int = 64
    window_size: int | None = None  # override the preset's (fast pretraining needs a divisor)
    fractions: tuple[float, ...] = FRACTIONS
    seeds: tuple[int, ...] = (0,)
    datasets: tuple[str, ...] = ("phantoms",)
    arms: tuple[str, ...] = ("mae", "random")
    # synthetic data: phantom seeds of each pool (disjoint cases when they differ), variation
    pretrain_seed: int = 1
    labeled_seed: int = 2
    val_seed: int = 3
    test_seed: int = 4
    phantoms: str = "hard"
    n_unlabeled: int = 1200
    n_labeled: int = 200
    n_val: int = 24
    n_test: int = 100
    # MNI152: contiguous blocks with dropped gaps (training.data.mni152.split_blocks)
    mni_block: int = 12
    mni_gap: int = 4
    # pretraining (one per dataset, shared by seeds and fractions)
    pretrain_steps: int = 1000
    pretrain_batch: int = 16
    pretrain_lr: float = 1.5e-3
    pretrain_augment: bool = True  # training.data.augment.PretrainAugment defaults
    mask_unit: int = 8
    norm_pix_loss: bool = True
    # fine-tuning (identical for every arm and fraction)
    finetune_steps: int = 160
    finetune_batch: int = 8
    finetune_lr: float = 1e-3
    evals: int = 4  # validations per run (the best by val Dice is tested)
    threads: int | None = None
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def pretrain_key(self, dataset: str, fast: bool) -> str:
        """What a pretrained MAE depends on (a cached one is reused only when it matches)."""
        keys = ("preset", "input_size", "window_size", "pretrain_steps", "pretrain_batch",
                "pretrain_lr", "pretrain_augment", "mask_unit", "norm_pix_loss")
        d = {k: getattr(self, k) for k in keys} | {"dataset": dataset, "fast": fast}
        d |= self.data_key(dataset)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def data_key(self, dataset: str) -> dict:
        if dataset == "phantoms":
            return {k: getattr(self, k) for k in ("pretrain_seed", "labeled_seed", "val_seed",
                                                  "test_seed", "phantoms", "n_unlabeled",
                                                  "n_labeled", "n_val", "n_test")}
        return {"mni_block": self.mni_block, "mni_gap": self.mni_gap}

    def run_key(self, dataset: str) -> str:
        """Rows computed under another setting are not reused."""
        keys = ("input_size", "finetune_steps", "finetune_batch", "finetune_lr", "evals")
        d = {k: getattr(self, k) for k in keys} | {"pretrain": self.pretrain_key(dataset, False)}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: ``--quick``: both datasets on a CPU in about half an hour (2 cores).
QUICK = StudyConfig(preset="small", input_size=64, datasets=DATASETS, seeds=(0, 1, 2, 3, 4),
                    pretrain_steps=800,
                    finetune_steps=80, evals=2, n_unlabeled=800, n_val=16, n_test=64)
#: the default of the command without ``--quick``: for a GPU (not run here).
FULL = StudyConfig(preset="vismae", input_size=224, datasets=DATASETS,
                   seeds=tuple(range(10)), arms=("mae", "random", "paper"),
                   n_unlabeled=20000, n_labeled=400, n_val=64, n_test=200,
                   pretrain_steps=20000, pretrain_batch=64, pretrain_lr=1.5e-3,
                   mask_unit=16, finetune_steps=2000, finetune_batch=16, evals=10)
