"""Does a masked autoencoder use what it sees? The pretraining "input-use" check (issue 14).

Used by ``training.pretrain`` (logged every ``--check-every`` steps, recorded in the card) and
by the label-efficiency study's quick pretraining (``training.finetune.label_efficiency``).
"""
from __future__ import annotations

import torch

USES_INPUT_MARGIN = 0.9  # normal-mask error must be below this fraction of the all-masked error


@torch.no_grad()
def input_use_check(model, x: torch.Tensor, mask: torch.Tensor, mean_image: torch.Tensor,
                    margin: float = USES_INPUT_MARGIN) -> dict:
    """Masked-patch error on a fixed batch, three ways, in the loss's own units.

    ``x`` (B, C, H, W) standardised images the model did not train on (when the data allow),
    ``mask`` (B, tokens) a fixed mask drawn like the training masks, ``mean_image``
    (1, C, H, W) the standardised mean training image. Returns

    - ``masked_error``: the model's error on the masked patches with the normal mask;
    - ``all_masked_error``: the same patches, every token masked (the model sees nothing:
      what it paints is what it learnt of the average image, and of position);
    - ``mean_image_error``: pasting the mean training image into the masked patches;
    - ``uses_input``: ``masked_error < margin * all_masked_error``. A model that learnt only
      the average image does about as well blind as seeing 25 % of the image, and is flagged.
    """
    was_training = model.training
    model.eval()
    try:
        normal = float(model(x, mask=mask)[0])
        blind = float(model(x, mask=torch.ones_like(mask))[0])
        C = model.cfg.in_chans
        base = model.patchify(mean_image.float().expand(x.shape[0], C, -1, -1).contiguous())
        if model.cfg.norm_pix_loss:
            base = (base - base.mean(-1, keepdim=True)) / (base.var(-1, keepdim=True) + 1e-6) ** .5
        mean_err = float(model.forward_loss(x.float(), base, mask))
    finally:
        model.train(was_training)
    return {"masked_error": normal, "all_masked_error": blind, "mean_image_error": mean_err,
            "ratio_to_all_masked": normal / blind if blind > 0 else float("nan"),
            "uses_input": bool(normal < margin * blind),
            "beats_mean_image": bool(normal < mean_err), "margin": margin}


def describe_check(check: dict) -> str:
    text = (f"masked-patch error {check['masked_error']:.4f} with the normal mask, "
            f"{check['all_masked_error']:.4f} with everything masked, "
            f"{check['mean_image_error']:.4f} pasting the mean image")
    if not check["uses_input"]:
        text += ("; the model IGNORES ITS INPUT (its error seeing the visible patches is not "
                 f"below {check['margin']:.0%} of its error seeing nothing)")
    elif not check["beats_mean_image"]:
        text += "; it uses its input but does not yet beat pasting the mean image"
    return text
