"""Model behaviour beyond parity: masking, grayscale, sizes, gradients, autocast, errors."""
from __future__ import annotations

import pytest
import torch

from training.models import SwinConfig, build_model, get_config
from training.models.masking import random_window_mask, unit_mask_from_noise


def test_random_mask_is_unit_constant_and_exact_ratio():
    g = torch.Generator().manual_seed(0)
    mask = random_window_mask(8, (56, 56), 4, 0.75, generator=g)
    assert mask.shape == (8, 3136)
    assert (mask.sum(1) == 2352).all()
    units = mask.view(8, 14, 4, 14, 4)
    assert (units == units[:, :, :1, :, :1]).all()
    assert not torch.equal(mask[0], mask[1])  # per-sample masks differ


def test_masking_is_seeded():
    a = random_window_mask(4, (56, 56), 4, 0.75, generator=torch.Generator().manual_seed(3))
    b = random_window_mask(4, (56, 56), 4, 0.75, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mask_ratio_zero_keeps_everything():
    assert unit_mask_from_noise(torch.rand(2, 196), 0.0).sum() == 0


def test_mae_loss_only_counts_masked_patches():
    torch.manual_seed(0)
    mae = build_model("mae", "tiny").eval()
    x = torch.rand(1, 3, 224, 224)
    mask = random_window_mask(1, (56, 56), 4, 0.75, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, pred, _ = mae(x, mask=mask)
        target = mae.patchify(x)
        exact = ((pred - target) ** 2).mean(-1)[mask.bool()].mean()
        visible_only = ((pred - target) ** 2).mean(-1)[~mask.bool()].mean()
    torch.testing.assert_close(loss, exact)
    assert not torch.isclose(loss, visible_only)
    assert torch.equal(mae.unpatchify(target), x)


@pytest.mark.parametrize("task", ["mae", "segmentation", "classification"])
def test_grayscale_equals_repeated_channels(task):
    torch.manual_seed(0)
    model = build_model(task, "tiny", **({} if task == "mae" else {"num_classes": 3})).eval()
    x = torch.rand(2, 1, 224, 224)
    mask = random_window_mask(2, (56, 56), 4, 0.75) if task == "mae" else None
    with torch.no_grad():
        one = model(x, mask=mask) if mask is not None else model(x)
        three = (model(x.expand(-1, 3, -1, -1), mask=mask) if mask is not None
                 else model(x.repeat(1, 3, 1, 1)))
    if task == "mae":
        one, three = one[1], three[1]
    torch.testing.assert_close(one, three, atol=1e-4, rtol=0)


@pytest.mark.parametrize("task", ["mae", "segmentation", "classification"])
def test_every_parameter_gets_a_gradient(task):
    torch.manual_seed(0)
    model = build_model(task, "tiny", **({} if task == "mae" else {"num_classes": 2})).train()
    x = torch.rand(2, 1, 224, 224)
    out = model(x)
    loss = out[0] if task == "mae" else out.float().logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"


def test_mae_under_bf16_autocast():
    torch.manual_seed(0)
    mae = build_model("mae", "tiny").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = mae(torch.rand(2, 1, 224, 224))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert pred.dtype == torch.bfloat16 and mask.sum() == 2 * 2352
    loss.backward()
    assert torch.isfinite(mae.mask_token.grad).all()


@pytest.mark.parametrize("size", [256, 320])
def test_other_input_sizes(size):
    seg = build_model("segmentation", "tiny", num_classes=2).eval()
    mae = build_model("mae", "tiny").eval()
    with torch.no_grad():
        assert seg(torch.rand(1, 1, size, size)).shape == (1, 2, size, size)
        loss, pred, mask = mae(torch.rand(1, 1, size, size))
    assert pred.shape == (1, (size // 4) ** 2, 48) and torch.isfinite(loss)


def test_bad_input_shapes_are_explained():
    seg = build_model("segmentation", "tiny", num_classes=2)
    with pytest.raises(ValueError, match="multiples of 32"):
        seg(torch.rand(1, 1, 100, 100))
    with pytest.raises(ValueError, match="expected 1 or 3 input channels"):
        seg(torch.rand(1, 2, 224, 224))
    mae = build_model("mae", "tiny")
    with pytest.raises(ValueError, match="mask must be"):
        mae(torch.rand(1, 1, 224, 224), mask=torch.zeros(1, 10))


def test_presets_and_config_validation():
    assert get_config("vismae").depths == (2, 2, 2, 2)
    assert get_config("vismae_official_seg").decoder_depths == (6, 2, 2)
    assert get_config("vismae", depths=(2, 2, 4, 2)).decoder_depths == (4, 2, 2)
    with pytest.raises(ValueError, match="unknown model preset"):
        get_config("vit_huge")
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        SwinConfig(num_heads=(5, 6, 12, 24))
    cfg = get_config("small")
    assert SwinConfig.from_dict(cfg.to_dict()) == cfg


def test_no_weight_decay_covers_norms_biases_tables_and_mask_token():
    mae = build_model("mae", "tiny")
    skip = mae.no_weight_decay()
    assert "mask_token" in skip and "patch_embed.norm.weight" in skip
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in skip
    assert "layers.0.blocks.0.attn.qkv.weight" not in skip
