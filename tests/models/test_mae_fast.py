"""``--fast`` pretraining (training/models/mae_fast.py): agrees with the official (dense)
mode where the semantics coincide, skips most encoder FLOPs, keeps the weights' layout."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from training.models import build_model
from training.models.mae_fast import check_fast_compatible
from training.weights.checkpoint import init_from_checkpoint

GRID = 56 * 56  # tokens of a 224 input at patch 4


def _pair(preset="tiny", **kw):
    torch.manual_seed(0)
    mae = build_model("mae", preset, drop_path_rate=0.0, **kw).double()
    return mae


def _run(mae, x, mask, fast):
    mae.fast = fast
    mae.zero_grad(set_to_none=True)
    loss, pred, _ = mae(x, mask=mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in mae.named_parameters() if p.grad is not None}
    return loss.detach(), pred.detach(), grads


def test_fast_equals_dense_when_nothing_or_everything_is_masked():
    """Sample 0 fully visible, sample 1 fully masked (also exercises padding the active
    sets to the batch's largest): outputs, loss and every gradient agree."""
    mae = _pair()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    mask = torch.zeros(2, GRID, dtype=torch.float64)
    mask[1] = 1
    ld, pd, gd = _run(mae, x, mask, fast=False)
    lf, pf, gf = _run(mae, x, mask, fast=True)
    torch.testing.assert_close(pf, pd, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(lf, ld, rtol=1e-9, atol=1e-12)
    assert gf.keys() == gd.keys() and "mask_token" in gf
    for n in gd:
        torch.testing.assert_close(gf[n], gd[n], rtol=1e-7, atol=1e-10, msg=n)


def test_fast_differs_from_dense_with_a_real_mask_and_never_sees_masked_pixels():
    mae = _pair()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    mask = mae.random_mask(2, (56, 56), generator=torch.Generator().manual_seed(1)).double()
    _, pd, _ = _run(mae, x, mask, fast=False)
    _, pf, gf = _run(mae, x, mask, fast=True)
    assert (pf - pd).abs().max() > 1e-3  # a different (documented) variant, not the same
    assert all(torch.isfinite(g).all() for g in gf.values())
    # every parameter the dense mode trains is trained by the fast mode too
    assert {n for n, p in mae.named_parameters() if p.requires_grad} == set(gf)
    pixel = mask.view(2, 56, 1, 56, 1).expand(2, 56, 4, 56, 4).reshape(2, 1, 224, 224)
    x2 = torch.where(pixel.bool(), torch.randn_like(x), x)  # change only masked pixels
    mae.fast = True
    with torch.no_grad():
        assert torch.equal(mae(x2, mask=mask)[1], pf)


def test_fast_skips_most_encoder_flops():
    torch.manual_seed(0)
    mae = build_model("mae", "vismae")
    x = torch.randn(1, 1, 224, 224)
    mask = mae.random_mask(1, (56, 56))
    flops = {}
    for fast in (False, True):
        mae.fast = fast
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            latent_src = mae.patch_embed(x)
            if fast:
                from training.models.mae_fast import forward_encoder_fast
                forward_encoder_fast(mae, latent_src, mask)
            else:
                mae.forward_encoder(latent_src)
        flops[fast] = c.get_total_flops()
    assert flops[True] < 0.45 * flops[False], flops


def test_fast_trained_weights_load_into_the_normal_models():
    torch.manual_seed(0)
    mae = build_model("mae", "tiny")
    mae.fast = True
    ref = build_model("mae", "tiny").state_dict()
    opt = torch.optim.SGD(mae.parameters(), lr=0.1)
    x = torch.randn(2, 1, 224, 224)
    for _ in range(2):
        opt.zero_grad()
        mae(x)[0].backward()
        opt.step()
    state = mae.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ref.items()}
    dense = build_model("mae", "tiny")
    dense.load_state_dict(state, strict=True)
    seg = build_model("segmentation", "tiny", num_classes=2, depths=(2, 2, 2, 2))
    report = init_from_checkpoint(seg, state)
    assert not report.to_dict().get("mismatched"), report.summary()
    assert torch.equal(seg.state_dict()["layers.2.blocks.1.mlp.fc1.weight"],
                       state["layers.2.blocks.1.mlp.fc1.weight"])
    assert torch.equal(seg.state_dict()["layers_up.0.blocks.0.attn.qkv.weight"],
                       state["layers_up.0.blocks.0.attn.qkv.weight"])


def test_fast_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    mae = build_model("mae", "tiny", drop_path_rate=0.0)
    mae.fast = True
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    x = torch.stack([((xx - c) ** 2 + yy**2 < 0.3).float() for c in (-0.3, 0.0, 0.3, 0.1)])[:, None]
    opt = torch.optim.Adam(mae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = mae(x, generator=g)[0]
        loss.backward()
        opt.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_fast_refuses_grids_that_are_not_whole_windows():
    cfg = build_model("mae", "tiny").cfg
    check_fast_compatible(cfg, (56, 56))
    with pytest.raises(ValueError, match="multiple of the window"):
        check_fast_compatible(cfg, (16, 16))


def test_pretrain_cli_fast_runs_and_exports_normal_weights(tmp_path):
    """``python -m training.pretrain --fast`` end to end on tiny data; the exported model
    is an ordinary SwinMAE checkpoint."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from skimage.io import imsave

    from training.weights.checkpoint import load_checkpoint

    repo = Path(__file__).resolve().parents[2]
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        imsave(data / f"img{i}.png", rng.integers(0, 255, (64, 64), dtype=np.uint8),
               check_contrast=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    base = [sys.executable, "-m", "training.pretrain", "--data", str(data), "--model", "tiny",
            "--num-workers", "0", "--vis-every", "0", "--log-every", "1", "--fast",
            "--batch-size", "4", "--epochs", "1", "--check-every", "0"]
    bad = subprocess.run(base + ["--input-size", "64", "--output", str(tmp_path / "bad")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--fast with --input-size 64" in bad.stderr
    run = tmp_path / "run"
    ok = subprocess.run(base + ["--input-size", "224", "--output", str(run)],
                        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["loss"]) for r in records)
    model, card = load_checkpoint(run / "model")
    assert card.task == "mae" and not model.fast  # loads as the ordinary (dense) model
