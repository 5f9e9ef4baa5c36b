"""Architecture configuration and named presets for the VIS-MAE model family.

One :class:`SwinConfig` describes the Swin backbone shared by the masked
autoencoder, the U-shaped segmentation network and the classifier, so that a
checkpoint of one can initialise the others.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SwinConfig:
    """Hyper-parameters of a VIS-MAE Swin backbone (and its mirrored decoder).

    Widths double at each stage: ``embed_dim * 2**i``. ``decoder_depths``
    defaults to the encoder depths mirrored (stage ``L-2`` first), which is what
    the official segmentation network does.
    """

    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    decoder_depths: tuple[int, ...] | None = None
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    norm_eps: float = 1e-6
    # masked-image modelling (pretraining only)
    mask_unit: int = 16  # side of a square mask unit, in pixels
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False

    def __post_init__(self):
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if self.decoder_depths is None:
            object.__setattr__(self, "decoder_depths", tuple(self.depths[-2::-1]))
        else:
            object.__setattr__(self, "decoder_depths", tuple(int(d) for d in self.decoder_depths))
        self.validate()

    # -- derived ---------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def decoder_heads(self) -> tuple[int, ...]:
        return tuple(self.num_heads[-2::-1])

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this (patches and merges divide evenly)."""
        return self.patch_size * 2 ** (self.num_stages - 1)

    def validate(self) -> None:
        errors = []
        if len(self.num_heads) != len(self.depths):
            errors.append(f"num_heads {self.num_heads} and depths {self.depths} differ in length")
        if len(self.decoder_depths) != len(self.depths) - 1:
            errors.append(f"decoder_depths {self.decoder_depths} needs "
                          f"{len(self.depths) - 1} stages")
        for dim, heads in zip(self.dims, self.num_heads, strict=False):
            if dim % heads:
                errors.append(f"width {dim} is not divisible by {heads} heads")
        if self.mask_unit % self.patch_size:
            errors.append(f"mask_unit {self.mask_unit} px is not a multiple of patch "
                          f"{self.patch_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            errors.append(f"mask_ratio {self.mask_ratio} must be in [0, 1)")
        if self.img_size % self.size_multiple:
            errors.append(f"img_size {self.img_size} is not a multiple of {self.size_multiple}")
        if errors:
            raise ValueError("invalid SwinConfig: " + "; ".join(errors))

    def replace(self, **changes) -> SwinConfig:
        if "depths" in changes and "decoder_depths" not in changes:
            changes["decoder_depths"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SwinConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SwinConfig fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, SwinConfig] = {
    # The paper's backbone: Swin-T widths, the same number of blocks in every stage.
    "vismae": SwinConfig(),
    # The official segmentation factory's layout; stage-3 blocks 2-5 are not pretrained.
    "vismae_official_seg": SwinConfig(depths=(2, 2, 6, 2)),
    # Small enough for a laptop CPU to fine-tune in minutes (the built-in demo models).
    "small": SwinConfig(embed_dim=32, num_heads=(1, 2, 4, 8)),
    # For tests: the width of the official parity artifacts (head_dim 4).
    "tiny": SwinConfig(embed_dim=8, num_heads=(2, 4, 8, 16)),
}


def get_config(preset: str | SwinConfig = "vismae", **overrides) -> SwinConfig:
    """Return a preset by name (or a given config) with ``overrides`` applied."""
    if isinstance(preset, SwinConfig):
        cfg = preset
    else:
        try:
            cfg = PRESETS[preset]
        except KeyError:
            raise ValueError(f"unknown model preset {preset!r}; "
                             f"choose from {sorted(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg


__all__ = ["SwinConfig", "PRESETS", "get_config"]
