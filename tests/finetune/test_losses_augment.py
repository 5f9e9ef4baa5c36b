import pytest
import torch
import torch.nn.functional as F

from training.data.augment import AugmentConfig, apply_affine, augment_batch, random_affine
from training.finetune.losses import DiceCELoss, soft_dice_loss


def _perfect_logits(t, C, scale=50.0):
    return F.one_hot(t, C).permute(0, 3, 1, 2).float() * scale


def test_dice_loss_perfect_and_worst():
    t = torch.tensor([[[0, 1], [2, 2]]])
    assert soft_dice_loss(_perfect_logits(t, 3), t).item() == pytest.approx(0.0, abs=1e-4)
    wrong = torch.tensor([[[1, 2], [0, 0]]])
    assert soft_dice_loss(_perfect_logits(wrong, 3), t).item() == pytest.approx(1.0, abs=1e-4)


def test_dice_denominator_official_vs_foreground():
    t = torch.tensor([[[0, 1], [2, 2]]])
    logits = torch.zeros(1, 3, 2, 2)
    fg = soft_dice_loss(logits, t, denominator="foreground")
    allc = soft_dice_loss(logits, t, denominator="all")
    assert allc.item() == pytest.approx(fg.item() * 2 / 3)


def test_dicece_weights():
    t = torch.randint(0, 3, (2, 8, 8))
    logits = torch.randn(2, 3, 8, 8)
    loss = DiceCELoss()(logits, t)
    expected = 0.4 * F.cross_entropy(logits, t) + 0.6 * soft_dice_loss(logits, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rot90_flip_is_lossless_and_joint():
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 4, (16, 24, 24))
    img = mask[:, None].float() / 3  # image encodes its mask exactly
    cfg = AugmentConfig(p_rot_flip=1.0, p_affine=0.0, p_intensity=0.0)
    theta = random_affine(16, cfg, g)
    out, m = apply_affine(img, mask, theta)
    assert torch.equal((out[:, 0] * 3).round().long(), m)
    # each output is a rot90/flip of its input: same histogram, no pixel lost
    for b in range(16):
        assert torch.equal(torch.bincount(m[b].flatten(), minlength=4),
                           torch.bincount(mask[b].flatten(), minlength=4))


def test_augment_keeps_masks_integer_and_images_in_range():
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(8, 32, 32, dtype=torch.long)
    mask[:, 8:24, 8:24] = 2
    img = torch.rand(8, 1, 32, 32)
    out, m = augment_batch(img, mask, generator=g)
    assert out.shape == img.shape and m.shape == mask.shape and m.dtype == torch.long
    assert set(m.unique().tolist()) <= {0, 2}
    assert out.min() >= 0 and out.max() <= 1
    out2, m2 = augment_batch(img, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m, m2) and torch.allclose(out, out2)


def test_small_affine_moves_mask_with_image():
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(4, 64, 64, dtype=torch.long)
    mask[:, 20:44, 16:40] = 1
    img = mask[:, None].float()
    cfg = AugmentConfig(p_rot_flip=0.0, p_affine=1.0, p_intensity=0.0)
    out, m = augment_batch(img, mask, cfg, g)
    agree = ((out[:, 0] > 0.5).long() == m).float().mean()
    assert agree > 0.98
