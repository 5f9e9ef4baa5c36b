"""One preprocessing: ``prepare`` (then pretraining) and inference feed the model the same input.

The same DICOM series goes through ``python -m training.prepare``'s code (uint8 shards, read back
by the pretraining dataset and standardised as the pretraining loop does) and through
``training.interactive.inference`` (recording what the model receives). They agree to the
uint8 quantisation of the shards: |difference| <= 0.5/255 in [0, 1] units, i.e. 0.5/255/std
after standardisation (plus 1e-5 of float rounding).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.data.preprocessing import (
    DEFAULT_CT_WINDOW,
    Preprocessing,
    scale_to_unit,
    volume_limits,
)
from training.interactive.inference import run, segment_steps
from training.io import read_image
from training.models import build_model
from training.pretrain.data import ImageFolderDataset, ShardDataset
from training.pretrain.prepare import prepare
from training.weights.card import ModelCard

from ..io.factory import make_series


class Recorder(nn.Module):
    """A 'model' that keeps its input and predicts background."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])


def inference_input(image, prep: Preprocessing, modality, window) -> torch.Tensor:
    cfg = build_model("segmentation", "tiny", num_classes=2, img_size=prep.input_size).cfg
    card = ModelCard(name="rec", task="segmentation", architecture=cfg.to_dict(), num_classes=2,
                     preprocessing=prep.to_dict())
    rec = Recorder()
    run(segment_steps(rec, card, image, modality=modality, window=window, batch_size=3))
    return torch.cat(rec.seen)


def shard_input(shards) -> tuple[torch.Tensor, Preprocessing]:
    ds = ShardDataset(shards)
    unit = torch.stack([torch.from_numpy(ds.load(i)) for i in range(len(ds))])[:, None]
    return (unit - ds.prep.mean) / ds.prep.std, ds.prep  # as training.pretrain.loop does


CASES = {
    "CT, card window": dict(modality="CT", prep=Preprocessing(input_size=32)),
    "CT, header window": dict(modality="CT", prep=Preprocessing(input_size=32, ct_window=None)),
    "MR, slice percentiles": dict(modality="MR", prep=Preprocessing(input_size=32)),
    "MR, volume percentiles": dict(modality="MR",
                                   prep=Preprocessing(input_size=32, percentile_scope="volume")),
}


@pytest.mark.parametrize("case", CASES)
def test_prepare_and_inference_feed_the_model_the_same_input(case, tmp_path):
    modality, prep = CASES[case]["modality"], CASES[case]["prep"]
    # HU -200..196 over 4 slices: inside 40/400; 50 x 40 pixels resize to 32 x 32
    make_series(tmp_path / "src", n=4, rows=50, cols=40, modality=modality, intercept=-200.0,
                window=(0, 600))
    prepare(tmp_path / "src", tmp_path / "shards", prep=prep, skip_blank=False)
    from_shards, shard_prep = shard_input(tmp_path / "shards")
    assert shard_prep == prep  # the manifest records exactly what prepare applied

    (vol,) = read_image(tmp_path / "src")
    from_inference = inference_input(vol.array, shard_prep, vol.modality, vol.window)

    assert from_shards.shape == from_inference.shape == (4, 1, 32, 32)
    tol = 0.5 / 255 / prep.std + 1e-5
    diff = (from_shards - from_inference).abs().max().item()
    assert diff <= tol, f"{case}: prepare and inference differ by {diff:.2e} (> {tol:.2e})"
    assert from_inference.std() > 0.1  # a real image, not a constant


def test_the_rules_differ_where_the_card_says():
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 30, (3, 20, 20)).astype(np.float32)
    vol[2] += 500  # a bright slice
    slice_p, vol_p = Preprocessing(), Preprocessing(percentile_scope="volume")
    per_slice = scale_to_unit(vol[0], slice_p, "MR")
    per_volume = scale_to_unit(vol[0], vol_p, "MR", limits=volume_limits(vol, vol_p, "MR"))
    assert per_slice.max() == 1.0 and per_volume.max() < 0.3  # slice 0 is dim in its volume
    # CT: the card window, the header window when the card has none, else the default
    hu = np.array([[-160.0, 40.0, 240.0]])
    assert np.allclose(scale_to_unit(hu, Preprocessing(), "CT"), [[0, 0.5, 1]])
    header = Preprocessing(ct_window=None)
    assert np.allclose(scale_to_unit(hu, header, "CT", window=(40, 800)), [[0.25, 0.5, 0.75]])
    assert np.allclose(scale_to_unit(hu, header, "CT"), scale_to_unit(hu, Preprocessing(), "CT"))
    assert header.describe().startswith("CT: the file's header window (else {:g}/{:g})"
                                        .format(*DEFAULT_CT_WINDOW))
    # a file without a modality ("OT", NIfTI, PNG) follows the card's modality
    assert np.allclose(scale_to_unit(hu, Preprocessing(modality="CT"), "OT"), [[0, 0.5, 1]])
    with pytest.raises(ValueError, match="percentile_scope"):
        Preprocessing(percentile_scope="study")


def test_pretraining_image_folder_matches_inference(tmp_path):
    from skimage.io import imsave

    img = (np.random.default_rng(1).random((40, 56)) * 200 + 20).astype(np.uint8)
    imsave(tmp_path / "a.png", img, check_contrast=False)
    ds = ImageFolderDataset(tmp_path, image_size=32)
    unit = torch.from_numpy(ds.load(0))[None, None]
    x = inference_input(img, ds.prep, None, None)
    assert torch.allclose((unit - ds.prep.mean) / ds.prep.std, x, atol=1e-5)


def test_finetuning_datasets_follow_the_volume_scope():
    from training.data.datasets import ArrayDataset

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 30, (3, 32, 32)).astype(np.float32)
    vol[2] += 500
    masks = np.zeros(vol.shape, np.int64)
    prep = Preprocessing(input_size=32, percentile_scope="volume")
    ds = ArrayDataset([vol], [masks], prep=prep, modality="MR")
    x = inference_input(vol, prep, "MR", None)
    got = torch.stack([ds[i][0] for i in range(3)])
    assert torch.allclose((got - prep.mean) / prep.std, x, atol=1e-5)
    assert got[0].max() < 0.3  # scaled within its volume, not on its own
