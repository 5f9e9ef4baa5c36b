"""The fine-tune recipe for pretrained backbones does what each option claims
(training.finetune.recipe)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from training.data.datasets import ArrayDataset
from training.finetune import recipe
from training.finetune.engine import FinetuneConfig, build_for_config, finetune_steps
from training.models import build_model
from training.weights.checkpoint import read_model_card, save_checkpoint


def _mae(tmp_path):
    torch.manual_seed(1)
    mae = build_model("mae", "tiny")
    save_checkpoint(mae, tmp_path / "mae", name="mae", preprocessing={"input_size": 64})
    return mae, str(tmp_path / "mae")


def _cfg(**kw):
    return FinetuneConfig(task="segmentation", num_classes=3, epochs=1, batch_size=2, lr=1e-3,
                          warmup_epochs=0.0, **kw)


def test_encoder_only_transfer_keeps_the_decoder_at_its_fresh_init(tmp_path):
    mae, init = _mae(tmp_path)
    torch.manual_seed(5)
    model, report, _, _, cfg = build_for_config(_cfg(transfer="encoder", rescale="none"), init)
    torch.manual_seed(5)
    fresh = build_model("segmentation", mae.cfg, num_classes=3)
    own, ref, src = model.state_dict(), fresh.state_dict(), mae.state_dict()
    dec = [k for k in own if k.startswith(("layers_up", "first_patch_expanding", "norm_up"))]
    enc = [k for k in own if recipe.is_encoder(k)]
    assert dec and enc and cfg.transfer == "encoder"
    assert all(torch.equal(own[k], ref[k]) for k in dec)  # untouched fresh init
    assert all(torch.equal(own[k], src[k]) for k in enc)  # the MAE's encoder
    # the paper's transfer copies the decoder too
    full, rep_full, _, _, _ = build_for_config(_cfg(transfer="full", rescale="none"), init)
    assert torch.equal(full.layers_up[0].blocks[0].attn.qkv.weight,
                       mae.layers_up[0].blocks[0].attn.qkv.weight)
    assert len(rep_full.loaded) > len(report.loaded)


def test_rescale_matches_the_fresh_init_std_and_keeps_the_pattern(tmp_path):
    mae, init = _mae(tmp_path)
    torch.manual_seed(0)
    fresh = build_model("segmentation", mae.cfg, num_classes=3)
    model, report, _, _, _ = build_for_config(_cfg(transfer="encoder", rescale="std"), init)
    w, w_mae = model.layers[1].blocks[0].mlp.fc1.weight, mae.layers[1].blocks[0].mlp.fc1.weight
    w_ref = fresh.layers[1].blocks[0].mlp.fc1.weight
    assert w_mae.std() > 2 * w_ref.std()  # xavier vs trunc-normal(0.02): why the option exists
    assert float(w.detach().std()) == pytest.approx(float(w_ref.detach().std()), rel=0.05)
    ratio = w / w_mae  # one factor per tensor: the pattern is the MAE's
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4)
    assert "layers.1.blocks.0.mlp.fc1.weight" in report.rescaled
    # norms, biases and position-bias tables are copied as they are
    assert torch.equal(model.layers[1].blocks[0].norm1.weight, mae.layers[1].blocks[0].norm1.weight)
    assert torch.equal(model.layers[0].blocks[0].attn.relative_position_bias_table,
                       mae.layers[0].blocks[0].attn.relative_position_bias_table)
    assert not any(k.endswith(".bias") or "norm" in k for k in report.rescaled)


def test_layer_decay_gives_each_depth_its_learning_rate():
    model = build_model("segmentation", "tiny", num_classes=3)
    d, lr = 0.5, 1e-3
    L = sum(model.cfg.depths) + 1  # 9
    groups = recipe.param_groups(model, lr, 0.05, d)
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(lr * d ** L)
    assert lr_of["layers.0.blocks.0.attn.qkv.weight"] == pytest.approx(lr * d ** (L - 1))
    assert lr_of["layers.1.blocks.1.mlp.fc1.weight"] == pytest.approx(lr * d ** (L - 4))
    assert lr_of["layers.1.downsample.reduction.weight"] == pytest.approx(lr * d ** (L - 4))
    assert lr_of["layers.3.blocks.1.mlp.fc2.weight"] == pytest.approx(lr * d)
    for name in ("layers_up.0.blocks.0.attn.qkv.weight", "head.weight", "norm_up.weight"):
        assert lr_of[name] == pytest.approx(lr)
    assert groups[0]["lr"] == pytest.approx(lr)  # the logged lr is the peak one
    assert len(lr_of) == sum(1 for _ in model.parameters())
    # the schedule keeps the ratios; no-decay groups have no weight decay
    from training.runtime.optim import WarmupCosine
    opt = recipe.build_optimizer(model, lr, 0.05, d)
    sched = WarmupCosine(opt, 10, 0)
    for _ in range(3):
        opt.step()
        sched.step()
    for g in opt.param_groups:
        assert g["lr"] / opt.param_groups[0]["lr"] == pytest.approx(g["lr_scale"])
    assert all(g["weight_decay"] == 0.0 for g in groups
               if any(n.endswith(".bias") for n in g["names"]))


def test_freeze_then_unfreeze_trains_only_the_decoder_for_n_steps(phantoms, prep64):
    (img, lab), _ = phantoms
    data = ArrayDataset(img[:4], lab[:4].clip(0, 2), prep=prep64)
    torch.manual_seed(0)
    model = build_model("segmentation", "tiny", num_classes=3)
    cfg = _cfg(steps_per_epoch=4, freeze_encoder_steps=2, cache_mb=0)
    snap = lambda: {n: p.detach().clone() for n, p in model.named_parameters()}  # noqa: E731
    before, changed = snap(), []
    for ev in finetune_steps(model, data, None, cfg):
        if ev["kind"] == "step":
            now = snap()
            changed.append({n for n in now if not torch.equal(now[n], before[n])})
            before = now
    assert len(changed) == 4
    for step in (0, 1):
        assert changed[step] and not any(recipe.is_encoder(n) for n in changed[step])
        assert any(n.startswith("layers_up") for n in changed[step])
    for step in (2, 3):
        assert any(n.startswith("layers.0.") for n in changed[step])
        assert any(n.startswith("patch_embed") for n in changed[step])
    assert all(p.requires_grad for p in model.parameters())


def test_random_init_gets_the_neutral_recipe_and_pretrained_the_default(tmp_path):
    _, init = _mae(tmp_path)
    *_, rnd = build_for_config(_cfg(), None, "tiny")
    assert (rnd.transfer, rnd.rescale, rnd.layer_decay, rnd.freeze_encoder_steps) == \
        (None, None, 1.0, 0)
    *_, pre = build_for_config(_cfg(), init)
    assert recipe.Recipe(pre.transfer, pre.rescale, pre.layer_decay,
                         pre.freeze_encoder_steps) == recipe.PRETRAINED_DEFAULT
    *_, paper = build_for_config(_cfg(**recipe.PAPER.to_dict()), init)
    assert dataclasses.asdict(recipe.PAPER) == {k: getattr(paper, k) for k in
                                               recipe.PAPER.to_dict()}
    with pytest.raises(ValueError, match="transfer must be"):
        _cfg(transfer="decoder")
    with pytest.raises(ValueError, match="layer_decay"):
        _cfg(layer_decay=1.5)


def test_cli_recipe_flags_reach_the_model_card(tmp_path):
    from training.finetune.cli import main
    _, init = _mae(tmp_path)
    out = tmp_path / "run"
    rc = main(["--task", "segmentation", "--synthetic", "6", "--synthetic-size", "64",
               "--init", init, "--epochs", "1", "--batch-size", "2", "--transfer", "full",
               "--rescale", "std", "--layer-decay", "0.8", "--freeze-encoder-steps", "1",
               "--out", str(out), "--no-progress", "--threads", "1", "--val-fraction", "0"])
    assert rc == 0
    ft = read_model_card(out / "last").provenance["finetune"]
    assert (ft["transfer"], ft["rescale"], ft["layer_decay"], ft["freeze_encoder_steps"]) == \
        ("full", "std", 0.8, 1)
    rc = main(["--task", "segmentation", "--synthetic", "6", "--synthetic-size", "64",
               "--init", init, "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "d"),
               "--no-progress", "--threads", "1", "--val-fraction", "0"])
    ft = read_model_card(tmp_path / "d" / "last").provenance["finetune"]
    assert rc == 0 and ft["transfer"] == recipe.PRETRAINED_DEFAULT.transfer
    assert ft["rescale"] == recipe.PRETRAINED_DEFAULT.rescale
