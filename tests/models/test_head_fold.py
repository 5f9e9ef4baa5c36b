"""The U-Net head folds its final per-pixel LayerNorm into the 1×1 head (fp32/fp64): same
logits and gradients as LayerNorm-then-head, same parameters and state-dict keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.models import build_model


def _plain(m, x):
    fpe = m.final_patch_expanding
    B, h, w, _ = x.shape
    s = fpe.scale
    y = F.linear(fpe.norm(fpe.expand(x).view(B, h, w, s, s, -1)), m.head.weight.flatten(1))
    return y.permute(0, 5, 1, 3, 2, 4).reshape(B, -1, h * s, w * s)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_folded_head_matches_layernorm_then_head(dtype, atol):
    torch.manual_seed(0)
    m = build_model("segmentation", "tiny", num_classes=4).to(dtype)
    with torch.no_grad():  # non-trivial norm affine so the fold is exercised
        m.final_patch_expanding.norm.weight.normal_()
        m.final_patch_expanding.norm.bias.normal_()
    x = (torch.randn(2, 8, 8, m.cfg.embed_dim, dtype=dtype) * 2 + 3).requires_grad_()
    ref = _plain(m, x)
    grads_ref = torch.autograd.grad(ref.square().sum(), [x, *m.parameters()],
                                    allow_unused=True)
    got = m.forward_head(x)
    assert got.shape == ref.shape == (2, 4, 8 * m.cfg.patch_size, 8 * m.cfg.patch_size)
    torch.testing.assert_close(got, ref, atol=atol, rtol=0)
    grads = torch.autograd.grad(got.square().sum(), [x, *m.parameters()], allow_unused=True)
    for a, b in zip(grads, grads_ref, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol * 100, rtol=atol * 10)


def test_low_precision_keeps_the_plain_order():
    torch.manual_seed(0)
    m = build_model("segmentation", "tiny", num_classes=3)
    x = torch.randn(1, 8, 8, m.cfg.embed_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m.forward_head(x)
        ref = _plain(m, x)
    torch.testing.assert_close(got.float(), ref.float(), atol=0, rtol=0)
    assert "final_patch_expanding.norm.weight" in m.state_dict()
