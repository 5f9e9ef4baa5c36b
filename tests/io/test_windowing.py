import numpy as np
import pytest
import torch

from training.io.windowing import (
    CT_PRESETS,
    default_window,
    limits_to_window,
    presets_for_modality,
    robust_limits,
    window_to_limits,
    window_to_unit,
)


def test_presets_cover_the_usual_ct_windows():
    for name in ("brain", "subdural", "soft tissue", "lung", "bone", "liver", "mediastinum"):
        c, w = CT_PRESETS[name]
        assert w > 0
    assert CT_PRESETS["lung"][0] < 0 < CT_PRESETS["bone"][0]


@pytest.mark.parametrize("modality", ["MR", "US", "CR", "DX", "OT", "", None])
def test_no_ct_presets_for_other_modalities(modality):
    assert presets_for_modality(modality) == {}
    assert presets_for_modality("CT") == CT_PRESETS


def test_default_window_is_modality_aware():
    assert default_window("CT", (35, 90)) == (35, 90)  # header wins
    assert default_window("CT", None) == CT_PRESETS["soft tissue"]
    mr = np.linspace(0, 1000, 10001)
    c, w = default_window("MR", None, mr)
    lo, hi = window_to_limits(c, w)
    assert 0 <= lo < 10 and 990 < hi <= 1000  # percentiles, not a CT preset


def test_limits_roundtrip():
    assert limits_to_window(*window_to_limits(40, 400)) == (40, 400)
    assert window_to_limits(40, 400) == (-160, 240)


def test_window_to_unit_numpy_matches_definition():
    x = np.array([-2000, -160, 40, 240, 3000], dtype=np.int16)
    y = window_to_unit(x, 40, 400)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0, 0, 0.5, 1, 1], atol=1e-6)


def test_window_to_unit_torch_and_batched():
    x = torch.arange(-1000, 1000, 7, dtype=torch.int16).reshape(1, -1).repeat(2, 1)
    c = torch.tensor([[40.0], [-600.0]])
    w = torch.tensor([[400.0], [1500.0]])
    y = window_to_unit(x, c, w)
    ref = window_to_unit(x.numpy(), c.numpy(), w.numpy())
    assert y.dtype == torch.float32 and x.dtype == torch.int16
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-6)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_window_to_unit_rejects_bad_width():
    with pytest.raises(ValueError):
        window_to_unit(np.zeros(3), 0, 0)


def test_robust_limits_subsamples_big_arrays():
    a = np.zeros((300, 100, 100), np.int16)
    a[..., 50:] = 1000
    lo, hi = robust_limits(a, max_samples=10_000)
    assert lo == 0 and hi == 1000
