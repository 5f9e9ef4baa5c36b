"""The U-Net's inference fast paths (in-place residuals / softmax / GELU, the chunked sum
of squares of the folded head) compute what the plain autograd paths compute."""
from __future__ import annotations

import pytest
import torch

from training.models import build_model
from training.models.segmentation import _sum_squares_chunked


@pytest.mark.parametrize("size", [64, 96])  # 96: 24² tokens, not a multiple of the window
def test_no_grad_output_equals_the_autograd_path(size):
    torch.manual_seed(0)
    m = build_model("segmentation", "tiny", num_classes=3).double().eval()
    with torch.no_grad():  # non-trivial norms so that every LayerNorm and the fold matter
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_()
                mod.bias.normal_()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.enable_grad():  # the plain paths: a graph is recorded
        ref = m(x)
    assert ref.requires_grad
    with torch.no_grad():
        fast = m(x)
    with torch.inference_mode():
        fast_im = m(x)
    torch.testing.assert_close(fast, ref.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(fast_im, ref.detach(), atol=1e-10, rtol=0)


def test_chunked_sum_of_squares_matches_the_full_product():
    torch.manual_seed(0)
    x, E = torch.randn(1000, 24, dtype=torch.float64), torch.randn(16 * 5, 24, dtype=torch.float64)
    ref = (x @ E.t()).view(1000, 16, 5).square().sum(-1)
    for rows in (7, 256, 4096):  # a ragged last chunk, several chunks, one chunk
        torch.testing.assert_close(_sum_squares_chunked(x, E, 16, rows), ref, atol=1e-10, rtol=0)


def test_chunked_sum_of_squares_gradients():
    from training.models.segmentation import _ExpandSumSquares

    torch.manual_seed(0)
    x = torch.randn(23, 6, dtype=torch.float64, requires_grad=True)
    E = torch.randn(4 * 3, 6, dtype=torch.float64, requires_grad=True)
    for rows in (5, 64):  # ragged chunks; one chunk
        torch.autograd.gradcheck(lambda a, b, r=rows: _ExpandSumSquares.apply(a, b, 4, r), (x, E))
    got = _ExpandSumSquares.apply(x, E, 4, 5)
    torch.testing.assert_close(got, (x @ E.t()).view(23, 4, 3).square().sum(-1), atol=1e-12,
                               rtol=0)


def test_no_grad_under_bf16_autocast_keeps_an_fp32_residual_stream():
    """Under autocast the attention and MLP outputs are bf16 while the residual stream may
    be fp32 (on CUDA LayerNorm runs in fp32): the in-place fast paths must keep the fp32
    sums, bit-identical to the plain paths."""
    from training.models.blocks import SwinBlock

    torch.manual_seed(0)
    for shift in (0, 3):
        blk = SwinBlock(16, 2, 7, shift).eval()
        x = torch.randn(2, 14, 14, 16)  # an fp32 residual stream
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.enable_grad():
                ref = blk(x)
            with torch.no_grad():
                fast = blk(x)
        assert ref.dtype == fast.dtype == torch.float32
        torch.testing.assert_close(fast, ref.detach(), atol=0, rtol=0)
