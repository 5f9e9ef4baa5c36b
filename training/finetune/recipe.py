"""The fine-tuning recipe for pretrained backbones (issue 14): what transfers, at what weight
scale, and how the optimizer treats the layers.

Four knobs, each a :class:`~training.finetune.engine.FinetuneConfig` field (``None`` = the
recipe default for the init, see :func:`resolve`), a ``python -m training.finetune`` flag,
and recorded in the model card (``provenance.finetune``):

* ``transfer``: ``"full"`` copies encoder *and* decoder from the MAE (the paper's official
  code); ``"encoder"`` copies the encoder only and keeps the decoder at its fresh init.
* ``rescale``: ``"std"`` rescales every transferred weight matrix (linear / conv weights,
  not norms, biases, position-bias tables or tokens) to the standard deviation the same
  tensor has at the fresh fine-tuning init. The MAE's xavier init leaves weights 2-6x larger
  than the segmentation net's trunc-normal(0.02); the issue traced most of the MAE-init
  deficit to that scale. ``"none"`` keeps them as pretrained.
* ``layer_decay``: layer-wise learning-rate decay (BEiT/MAE fine-tuning): patch embedding
  gets ``lr * d**L``, encoder block ``k`` (counted from 1 over all stages) ``lr * d**(L-k)``,
  a stage's patch merging its last block's, and everything after the encoder ``lr``
  (``L`` = encoder blocks + 1). 1.0 = off.
* ``freeze_encoder_steps``: for the first N optimizer steps only the parts after the encoder
  train (patch embedding and encoder frozen, no gradients, no weight decay); then all.

:data:`PRETRAINED_DEFAULT` is what a pretrained init gets when a knob is not given; it was
chosen by the ablation in ``docs/label_efficiency.md``. Random init always gets the neutral
values (no transfer, no decay, no freeze). :data:`PAPER` is the official recipe.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from torch import nn

TRANSFERS = ("full", "encoder")
RESCALES = ("none", "std")
ENCODER_MODULES = ("patch_embed", "layers")  # top-level module names of the encoder


@dataclass(frozen=True)
class Recipe:
    transfer: str = "full"
    rescale: str = "none"
    layer_decay: float = 1.0
    freeze_encoder_steps: int = 0

    def __post_init__(self):
        validate(self.transfer, self.rescale, self.layer_decay, self.freeze_encoder_steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(transfer, rescale, layer_decay, freeze_encoder_steps) -> None:
    if transfer is not None and transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
    if rescale is not None and rescale not in RESCALES:
        raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if freeze_encoder_steps is not None and freeze_encoder_steps < 0:
        raise ValueError(f"freeze_encoder_steps must be >= 0, got {freeze_encoder_steps}")


#: The official code: encoder and decoder transfer as pretrained, one learning rate.
PAPER = Recipe()
#: Pretrained inits, chosen by measurement (docs/label_efficiency.md, "Recipe ablation").
PRETRAINED_DEFAULT = Recipe(transfer="encoder", rescale="std", freeze_encoder_steps=20)
#: Random init: nothing transfers; no decay, no freezing.
NEUTRAL = {"transfer": None, "rescale": None, "layer_decay": 1.0, "freeze_encoder_steps": 0}


def resolve(cfg, pretrained: bool):
    """``cfg`` (a FinetuneConfig) with every ``None`` recipe knob filled: from
    :data:`PRETRAINED_DEFAULT` for a pretrained init, neutral values for random init (where
    ``transfer``/``rescale`` stay ``None``: they do not apply)."""
    if pretrained:
        fill = {k: v for k, v in PRETRAINED_DEFAULT.to_dict().items() if getattr(cfg, k) is None}
    else:
        fill = {k: v for k, v in NEUTRAL.items() if k in ("transfer", "rescale")
                or getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **fill) if fill else cfg


def is_encoder(name: str) -> bool:
    return name.split(".")[0] in ENCODER_MODULES


# -- layer-wise learning-rate decay --------------------------------------------------------------
def layer_id(name: str, depths: tuple[int, ...]) -> int:
    """0 patch embedding, 1..sum(depths) encoder blocks, sum(depths) + 1 everything after."""
    parts = name.split(".")
    if parts[0] == "patch_embed":
        return 0
    if parts[0] == "layers":
        i = int(parts[1])
        before = sum(depths[:i])
        if parts[2] == "blocks":
            return 1 + before + int(parts[3])
        return before + depths[i]  # patch merging: with the stage's last block
    return sum(depths) + 1


def lr_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier of every parameter."""
    depths = model.cfg.depths
    top = sum(depths) + 1
    return {n: layer_decay ** (top - layer_id(n, depths)) for n, _ in model.named_parameters()}


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups by (lr scale, decayed or not, encoder or not), trainable parameters only.

    Each group's ``lr`` is ``lr * scale`` (schedulers multiply it); ``lr_scale`` says the
    scale. The top group (scale 1, decayed) comes first, so ``param_groups[0]['lr']`` is the
    peak rate. Encoder and the rest are always separate groups, so that freezing one part
    never mixes step counts inside a group (which would slow AdamW's foreach path).
    """
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    scales = lr_scales(model, layer_decay)
    groups: dict[tuple, dict] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (n in skip or p.ndim <= 1)
        key = (scales[n], decay, is_encoder(n))
        g = groups.setdefault(key, {"params": [], "names": [], "lr": lr * scales[n],
                                    "lr_scale": scales[n],
                                    "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
        g["names"].append(n)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1], kv[0][2]))
    return [g for _, g in ordered]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0,
                    betas: tuple[float, float] = (0.9, 0.95)):
    from training.runtime.optim import AdamW

    groups = param_groups(model, lr, weight_decay, layer_decay)
    for g in groups:
        del g["names"]  # not part of the optimizer's state dict
    return AdamW(groups, lr=lr, betas=betas)


# -- freeze, then unfreeze -----------------------------------------------------------------------
def set_phase(model: nn.Module, trainable: set[str] | list[str], freeze_encoder_steps: int,
              step: int) -> bool:
    """Before optimizer step ``step`` (0-based): encoder frozen while ``step <
    freeze_encoder_steps``, else every name in ``trainable`` trains. Returns whether frozen."""
    frozen = step < freeze_encoder_steps
    trainable = set(trainable)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable and not (frozen and is_encoder(n)))
    return frozen


# -- building the model: what transfers ----------------------------------------------------------
def is_random_init(init) -> bool:
    return init in (None, "", "random", "none")


def build_finetune_model(task: str, num_classes: int, init: str | None = None,
                         preset: str = "vismae", encoder_only: bool = False,
                         rescale: str | None = None):
    """-> (model, LoadReport or None, Preprocessing or None, parent description).

    ``init``: None/'random' (random initialisation, the baseline), one of our
    checkpoint directories (MAE or fine-tuned) or an official ``.pth``. The
    architecture comes from the checkpoint; ``preset`` (a name or a SwinConfig) only for
    random init. The returned preprocessing is the parent's (None for random init).
    ``rescale='std'``: transferred weight matrices are rescaled to the std they have at the
    fresh init (:mod:`training.finetune.recipe`); the report lists them.
    """
    from training.data.preprocessing import OFFICIAL_PRETRAIN
    from training.models import build_model
    from training.weights.checkpoint import CARD_NAME, init_from_checkpoint, read_model_card
    from training.weights.official import infer_architecture, read_state_dict
    from training.weights.transfer import rescale_to_reference, weight_stds

    if is_random_init(init):
        return build_model(task, preset, num_classes=num_classes), None, None, "random init"
    path = Path(init)
    if (path / CARD_NAME).is_file() or (path.parent / CARD_NAME).is_file():
        card = read_model_card(path)
        model = build_model(task, card.config, num_classes=num_classes)
        fresh = weight_stds(model) if rescale == "std" else {}
        report = init_from_checkpoint(model, path, encoder_only=encoder_only)
        prep, parent = card.prep, f"{card.name} ({card.task}, {path})"
    else:
        state, name = read_state_dict(path)
        _, cfg, _ = infer_architecture(state, name)
        model = build_model(task, cfg, num_classes=num_classes)
        fresh = weight_stds(model) if rescale == "std" else {}
        report = init_from_checkpoint(model, state, encoder_only=encoder_only)
        report.source = name
        prep, parent = OFFICIAL_PRETRAIN, f"official VIS-MAE checkpoint {path.name}"
    if rescale == "std":
        report.rescaled = rescale_to_reference(model, fresh, report.loaded)
    return model, report, prep, parent


def build_for_config(cfg, init: str | None, preset="vismae"):
    """:func:`build_finetune_model` with ``cfg``'s recipe resolved for this init
    (:func:`training.finetune.recipe.resolve`) -> (model, report, prep, parent, resolved cfg)."""
    cfg = resolve(cfg, pretrained=not is_random_init(init))
    model, report, prep, parent = build_finetune_model(
        cfg.task, cfg.num_classes, init, preset, encoder_only=cfg.transfer == "encoder",
        rescale=cfg.rescale)
    return model, report, prep, parent, cfg
