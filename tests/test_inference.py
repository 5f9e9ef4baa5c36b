"""Slice-batched inference: shapes, preprocessing from the card, progress, stopping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data.preprocessing import Preprocessing
from training.interactive.inference import classify_steps, run, segment_steps
from training.models import build_model
from training.weights.card import ModelCard


def _seg(num_classes=3, **prep):
    torch.manual_seed(0)
    model = build_model("segmentation", "tiny", num_classes=num_classes, img_size=64)
    card = ModelCard(name="t", task="segmentation", architecture=model.cfg.to_dict(),
                     num_classes=num_classes,
                     preprocessing=Preprocessing(input_size=64, **prep).to_dict())
    return model, card


def test_volume_shapes_and_progress():
    model, card = _seg()
    vol = np.random.default_rng(0).normal(0, 300, (5, 80, 96)).astype(np.float32)
    steps = segment_steps(model, card, vol, modality="CT", batch_size=2, uncertainty=True)
    progress = []
    try:
        while True:
            progress.append(next(steps))
    except StopIteration as stop:
        result = stop.value
    assert [(p.done, p.total) for p in progress] == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert result.labels.shape == (5, 80, 96) and result.labels.dtype == np.uint8
    assert result.labels.max() < 3 and result.uncertainty.shape == (5,)
    assert np.all(result.uncertainty >= 0) and np.all(result.uncertainty <= np.log(3) + 1e-5)


def test_matches_a_direct_model_call():
    model, card = _seg(ct_window=(40.0, 400.0))
    img = np.random.default_rng(1).uniform(-200, 240, (64, 64)).astype(np.float32)
    result = run(segment_steps(model, card, img, modality="CT"))
    x = torch.from_numpy(np.clip((img + 160) / 400, 0, 1))[None, None]
    with torch.no_grad():
        expected = model((x - 0.223) / 0.202).argmax(1)[0].numpy()
    assert np.array_equal(result.labels, expected)


def test_subset_of_slices_and_stopping_early():
    model, card = _seg()
    vol = np.zeros((6, 64, 64), np.float32)
    result = run(segment_steps(model, card, vol, slices=[1, 4], keep_probabilities=True))
    assert result.slices == [1, 4] and result.probabilities.shape == (2, 3, 64, 64)
    assert result.uncertainty is None  # only computed when asked (active learning)
    steps = segment_steps(model, card, vol, batch_size=1)
    next(steps), next(steps)
    steps.close()  # a cancelled worker simply stops pulling: nothing else runs


def test_errors():
    model, card = _seg()
    with pytest.raises(ValueError, match="outside"):
        run(segment_steps(model, card, np.zeros((2, 64, 64)), slices=[5]))
    with pytest.raises(ValueError, match="2-D image or a 3-D volume"):
        run(segment_steps(model, card, np.zeros((2, 2, 64, 64))))
    with pytest.raises(ValueError, match="not a classifier"):
        run(classify_steps(model, card, np.zeros((64, 64))))


def test_classification_probabilities():
    torch.manual_seed(0)
    model = build_model("classification", "tiny", num_classes=2, img_size=64)
    card = ModelCard(name="c", task="classification", architecture=model.cfg.to_dict(),
                     num_classes=2, preprocessing=Preprocessing(input_size=64).to_dict())
    result = run(classify_steps(model, card, np.random.rand(3, 64, 64)))
    assert result.probabilities.shape == (3, 2)
    np.testing.assert_allclose(result.probabilities.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(result.aggregate(), result.probabilities.mean(0))
