"""Copy weights between models: strict loads with named mismatches, and the MAE → U-Net /
classifier transfer with a report of what went where."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass
class TransferReport:
    """Which keys of a source state dict went where."""

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    # in the model, not in the source: initialised fresh
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # in the source, not used by the model
    mismatched: list[str] = field(default_factory=list)  # same name, other shape (not loaded)
    # loaded weight matrices rescaled to the fresh init's std: name -> factor applied
    rescaled: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)}, newly initialised {len(self.new)}, "
                f"ignored {len(self.ignored)}, shape-mismatched {len(self.mismatched)}")

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "new": self.new,
                "ignored": self.ignored, "mismatched": self.mismatched,
                "rescaled": len(self.rescaled)}


def load_state_dict_checked(model: nn.Module, state: dict, source) -> None:
    """Strict load with an error that lists the offending keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys[:6])}"
                             + (" ..." if len(keys) > 6 else ""))
        raise CheckpointError(source, "weights do not fit the architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def transfer_state_dict(model: nn.Module, state: dict, source: str = "",
                        skip: tuple[str, ...] = ()) -> TransferReport:
    """Copy every tensor whose name and shape match; report the rest. ``skip``: name prefixes."""
    own = model.state_dict()
    report = TransferReport(source=str(source))
    usable = {}
    for k, v in state.items():
        if k not in own or k.startswith(skip):
            report.ignored.append(k)
        elif v.shape != own[k].shape:
            report.mismatched.append(f"{k}: source {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        else:
            usable[k] = v
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.new = sorted(k for k in own if k not in usable)
    return report


def rescalable(name: str, tensor) -> bool:
    """A weight matrix (linear / conv): not a norm, bias, position-bias table or token."""
    return (tensor.ndim >= 2 and name.endswith(".weight")
            and "relative_position_bias_table" not in name and "token" not in name)


def weight_stds(model: nn.Module) -> dict[str, float]:
    """Standard deviation of every rescalable tensor (call on a freshly initialised model)."""
    return {k: float(v.float().std()) for k, v in model.state_dict().items() if rescalable(k, v)}


def rescale_to_reference(model: nn.Module, reference: dict[str, float], names) -> dict[str, float]:
    """Multiply each tensor in ``names`` (that ``reference`` holds) by ``reference std / its
    std``, so the transferred weights keep their pattern at the fresh init's scale.
    Returns ``{name: factor}``."""
    import torch

    own = dict(model.named_parameters())
    out = {}
    with torch.no_grad():
        for k in names:
            if k not in reference or k not in own:
                continue
            std = float(own[k].float().std())
            if std > 0 and reference[k] > 0:
                f = reference[k] / std
                own[k].mul_(f)
                out[k] = f
    return out
