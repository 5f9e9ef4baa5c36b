"""Pretraining augmentation (seeded per sample) and the "uses what it sees" check."""
from __future__ import annotations

import pytest
import torch

from training.data.augment import PretrainAugment, pretrain_augment
from training.models import build_model
from training.models.mae import SwinMAE
from training.models.masking import random_window_mask
from training.pretrain.config import parse_args
from training.pretrain.data import ImageFolderDataset, IndexSubset, open_dataset
from training.pretrain.outputs import describe_check, input_use_check

from .conftest import BASE, run_pretrain


def test_augmentation_is_a_function_of_seed_epoch_and_index(image_folder):
    ds = open_dataset(image_folder, 64, 16, seed=3, augment=PretrainAugment())
    x, noise, ok = ds[(5, 2)]
    x2, noise2, _ = ds[(5, 2)]
    assert ok and torch.equal(x, x2) and torch.equal(noise, noise2)
    assert not torch.equal(ds[(5, 3)][0], x)  # another epoch: another view
    assert not torch.equal(open_dataset(image_folder, 64, 16, 4, PretrainAugment())[(5, 2)][0], x)
    plain = ImageFolderDataset(image_folder, 64, 16, seed=3)
    assert not torch.equal(plain[(5, 2)][0], x)  # it does augment
    assert x.shape == (1, 64, 64) and 0 <= x.min() and x.max() <= 1
    # a subset keeps the sample's seed of its index in the full dataset
    assert torch.equal(IndexSubset(ds, [7, 5])[(1, 2)][0], x)


def test_augmentation_crops_rotates_flips_and_jitters():
    img = torch.zeros(1, 32, 32)
    img[:, 8:24, 4:12] = 1.0  # an off-centre bar
    views = [pretrain_augment(img, PretrainAugment(), torch.Generator().manual_seed(s))
             for s in range(20)]
    assert len({round(float(v.sum()), 3) for v in views}) == 20  # every view differs
    ident = PretrainAugment(crop_scale=1.0, ratio=(1.0, 1.0), rotate_deg=0, flip=False,
                            intensity=0.0)
    assert torch.equal(pretrain_augment(img, ident, torch.Generator().manual_seed(0)), img)
    with pytest.raises(ValueError, match="crop scale"):
        PretrainAugment(crop_scale=0)


def test_cli_options_for_augmentation_mask_unit_and_check():
    cfg = parse_args(["--data", "d", "--model", "tiny", "--input-size", "64", "--mask-unit", "8",
                      "--norm-pix-loss", "--aug-rotate", "5", "--check-every", "10"])
    assert cfg.model_config().mask_unit == 8 and cfg.model_config().norm_pix_loss
    assert cfg.augmentation().rotate_deg == 5 and cfg.check_every == 10
    assert parse_args(["--data", "d", "--no-augment"]).augmentation() is None
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--input-size", "64", "--mask-unit", "12"])


class _Constant(SwinMAE):
    """Predicts the same pixels wherever and whatever it is shown."""

    def forward(self, imgs, mask=None, generator=None):
        pred = torch.full_like(self.patchify(imgs.expand(-1, self.cfg.in_chans, -1, -1)), 0.1)
        return self.forward_loss(imgs, pred, mask), pred, mask


class _MeanOfVisible(SwinMAE):
    """Fills masked patches with the mean of the visible pixels of the same image: a cheap
    model that does use what it sees (nothing visible: it predicts 0, the data mean)."""

    def forward(self, imgs, mask=None, generator=None):
        target = self.patchify(imgs.expand(-1, self.cfg.in_chans, -1, -1))
        vis = (1 - mask.float())[..., None]
        mean = (target * vis).sum((1, 2)) / (vis.sum((1, 2)) * target.shape[-1]).clamp_min(1)
        pred = mean.view(-1, 1, 1).expand_as(target)
        return self.forward_loss(imgs, pred, mask), pred, mask


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    level = torch.randn(16, 1, 1, 1, generator=g)  # images differ in brightness
    x = level + 0.1 * torch.randn(16, 1, 64, 64, generator=g)
    mask = random_window_mask(16, (16, 16), 4, 0.75, generator=g)
    return x, mask, x.mean(0, keepdim=True)


@pytest.mark.parametrize("kind", ["fresh", "constant"])
def test_check_flags_a_model_that_ignores_its_input(kind):
    cfg = build_model("mae", "tiny", img_size=64).cfg
    torch.manual_seed(0)
    model = SwinMAE(cfg) if kind == "fresh" else _Constant(cfg)
    check = input_use_check(model, *_batch())
    assert not check["uses_input"], check
    assert check["masked_error"] > 0.9 * check["all_masked_error"]
    assert "IGNORES ITS INPUT" in describe_check(check)
    assert model.training  # the check restores the mode


def test_check_passes_a_model_that_uses_its_input():
    model = _MeanOfVisible(build_model("mae", "tiny", img_size=64).cfg)
    check = input_use_check(model, *_batch())
    assert check["uses_input"] and check["beats_mean_image"], check
    assert check["masked_error"] < 0.1 * check["all_masked_error"]
    assert "IGNORES" not in describe_check(check)


def test_a_run_records_the_check_and_flags_it_in_the_card(image_folder, tmp_path):
    """Two steps of a fresh model: it has learnt nothing, so the card must say it ignores its
    input, and the log must warn."""
    from training.weights.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = run_pretrain(BASE + ["--data", str(image_folder), "--output", str(run),
                                "--batch-size", "8", "--max-steps", "2", "--check-images", "8",
                                "--mask-unit", "8", "--lr", "1e-6"])
    _, card = load_checkpoint(run / "model")
    pre = card.provenance["pretraining"]
    assert pre["mask_unit"] == 8 and pre["augmentation"]["crop_scale"] == 0.5
    assert pre["input_use_check"]["images"] == 8 and not pre["input_use_check"]["uses_input"]
    assert "IGNORES ITS INPUT" in card.description and "IGNORES ITS INPUT" in proc.stderr


def test_check_images_leave_training_when_the_data_allow(image_folder):
    from training.pretrain.loop import _split_check

    ds = open_dataset(image_folder, 64, 16, seed=0)
    cfg = parse_args(["--data", "d", "--check-images", "2"])
    train, idx, held = _split_check(ds, cfg)  # 25 >= 10 x 2: held out
    assert held and len(idx) == 2 and len(train) == len(ds) - 2
    assert not set(idx) & set(train.indices)
    cfg = parse_args(["--data", "d", "--check-images", "16"])
    train, idx, held = _split_check(ds, cfg)  # too few images: checked on training images
    assert not held and train is ds and len(idx) == 16
    assert _split_check(ds, parse_args(["--data", "d", "--check-images", "0"]))[1] == []
