import json
import threading

import numpy as np
import pytest
import torch

from training.data.datasets import ArrayDataset, DataError
from training.data.synthetic import CLASSES, make_classification_set
from training.finetune.engine import (
    FinetuneConfig,
    build_finetune_model,
    configure_trainable,
    finetune_steps,
    predict_and_score,
)
from training.finetune.runner import finetune
from training.models import build_model
from training.weights.checkpoint import load_checkpoint, read_model_card, save_checkpoint


def _seg_data(phantoms, prep, n_train=None):
    (tr_img, tr_lab), (te_img, te_lab) = phantoms
    n = n_train or len(tr_img)
    return (ArrayDataset(tr_img[:n], tr_lab[:n], prep=prep),
            ArrayDataset(te_img, te_lab, prep=prep))


def _cfg(**kw):
    base = dict(task="segmentation", num_classes=5, epochs=1, batch_size=4, lr=1e-3,
                warmup_epochs=0.0)
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.mark.slow
def test_tiny_segmentation_learns_phantoms(phantoms, prep64):
    """A few hundred steps of the tiny preset reach a Dice far above chance on held-out phantoms."""
    train, test = _seg_data(phantoms, prep64)
    torch.manual_seed(0)
    model = build_model("segmentation", "tiny", num_classes=5)
    cfg = _cfg(epochs=6, steps_per_epoch=50, batch_size=8, lr=2e-3, warmup_epochs=0.5)
    events = list(finetune_steps(model, train, test, cfg))
    assert events[-1]["kind"] == "done"
    assert sum(e["kind"] == "step" for e in events) == 300
    res = predict_and_score(model, test, "segmentation", prep64)
    # chance levels: all-background and a uniformly random label map
    (_, _), (te_img, te_lab) = phantoms
    bg = predict_and_score(_Const(0), test, "segmentation", prep64)["mean_dice_pooled"]
    rnd = predict_and_score(_Const(None), test, "segmentation", prep64)["mean_dice_pooled"]
    print(f"tiny preset, 300 steps: held-out Dice {res['mean_dice']:.3f} "
          f"(pooled {res['mean_dice_pooled']:.3f}); chance pooled: background {bg:.3f}, "
          f"random {rnd:.3f}; per class {[round(c['dice'], 3) for c in res['per_class']]}")
    assert res["mean_dice_pooled"] > 0.4 and res["mean_dice_pooled"] > rnd + 0.3
    assert res["per_class"][1]["dice_pooled"] > 0.6  # liver, the largest organ
    losses = [e["loss"] for e in events if e["kind"] == "step"]
    assert np.mean(losses[-30:]) < 0.6 * np.mean(losses[:10])


class _Const(torch.nn.Module):
    """Predicts a constant class (or uniform random classes with value None)."""

    num_classes = 5

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        B, _, H, W = x.shape
        if self.value is None:
            g = torch.Generator().manual_seed(0)
            return torch.rand(B, 5, H, W, generator=g)
        out = torch.zeros(B, 5, H, W)
        out[:, self.value] = 1
        return out


def test_modes_freeze_the_right_parameters(phantoms, prep64):
    train, _ = _seg_data(phantoms, prep64, 8)
    for mode, frozen_prefix, trained_prefix in (("decoder", "layers.", "layers_up."),
                                                ("head", "layers_up.", "head.")):
        torch.manual_seed(0)
        model = build_model("segmentation", "tiny", num_classes=5)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        list(finetune_steps(model, train, None, _cfg(mode=mode, steps_per_epoch=2)))
        after = model.state_dict()
        frozen = [k for k in before if k.startswith(frozen_prefix) and "relative_position" not in k]
        assert all(torch.equal(before[k], after[k]) for k in frozen), mode
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("patch_embed"))
        assert any(not torch.equal(before[k], after[k]) for k in before
                   if k.startswith(trained_prefix)), mode
    cls = build_model("classification", "tiny", num_classes=2)
    names = configure_trainable(cls, "head")
    assert names and all(n.startswith(("norm.", "head.")) for n in names)
    with pytest.raises(ValueError, match="decoder"):
        FinetuneConfig(task="classification", mode="decoder")


def test_stop_event_stops_cleanly(phantoms, prep64):
    train, _ = _seg_data(phantoms, prep64, 8)
    model = build_model("segmentation", "tiny", num_classes=5)
    stop = threading.Event()
    seen = []
    for ev in finetune_steps(model, train, None, _cfg(epochs=5, steps_per_epoch=4), stop):
        seen.append(ev)
        if ev["kind"] == "step" and ev["step"] == 3:
            stop.set()
    assert seen[-1]["kind"] == "stopped" and seen[-1]["step"] == 3
    assert sum(e["kind"] == "step" for e in seen) == 3


def test_finetune_wrapper_checkpoints_log_and_resume(tmp_path, phantoms, prep64):
    train, val = _seg_data(phantoms, prep64, 8)
    torch.manual_seed(0)
    model = build_model("segmentation", "tiny", num_classes=5)
    cfg = _cfg(epochs=2, steps_per_epoch=2)
    s = finetune(model, train, val, cfg, tmp_path / "run", classes=CLASSES, name="demo",
                 progress=False)
    assert s["status"] == "done" and s["steps"] == 4 and s["selection"] == "val_dice"
    card = read_model_card(tmp_path / "run" / "best")
    assert card.class_names == [c["name"] for c in CLASSES]
    assert card.classes[1]["color"] == CLASSES[1]["color"]
    assert card.prep.input_size == 64 and card.provenance["finetune"]["epochs"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log].count("epoch") == 2
    with pytest.raises(FileExistsError):
        finetune(model, train, val, cfg, tmp_path / "run", progress=False)
    # resume: two more epochs continue the step count and restore the optimizer
    model2 = build_model("segmentation", "tiny", num_classes=5)
    cfg4 = _cfg(epochs=4, steps_per_epoch=2)
    s2 = finetune(model2, train, val, cfg4, tmp_path / "run", classes=CLASSES, resume=True,
                  progress=False)
    assert s2["steps"] == 8 and len(s2["history"]) == 4
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 4 and state["optimizer"]["state"]
    loaded, _ = load_checkpoint(tmp_path / "run" / "last")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model2.state_dict().values(), strict=False))


def test_init_from_mae_reports_transfer(tmp_path):
    mae = build_model("mae", "tiny")
    save_checkpoint(mae, tmp_path / "mae", name="mae", preprocessing={"input_size": 64})
    model, report, prep, parent = build_finetune_model("segmentation", 3, str(tmp_path / "mae"))
    assert report.loaded and "head.weight" in report.new and prep.input_size == 64
    assert torch.equal(model.patch_embed.proj.weight, mae.patch_embed.proj.weight)
    enc, rep2, _, _ = build_finetune_model("segmentation", 3, str(tmp_path / "mae"),
                                           encoder_only=True)
    assert any(k.startswith("layers_up") for k in rep2.new)
    rnd, none, p0, _ = build_finetune_model("classification", 2, "random", "tiny")
    assert none is None and p0 is None


def test_bad_data_fails_loudly(prep64):
    model = build_model("segmentation", "tiny", num_classes=3)
    bad = ArrayDataset([np.zeros((32, 32))], [np.full((32, 32), 3)], prep=prep64)
    with pytest.raises(DataError, match="outside 0..2"):
        next(finetune_steps(model, bad, None, _cfg(num_classes=3)))
    with pytest.raises(DataError, match="empty"):
        next(finetune_steps(model, ArrayDataset([], [], prep=prep64), None, _cfg(num_classes=3)))
    with pytest.raises(ValueError, match="classes"):
        next(finetune_steps(model, bad, None, _cfg(num_classes=5)))


def test_classification_runs_and_reports_auc(prep64):
    img, y = make_classification_set(24, seed=1, size=64)
    train = ArrayDataset(img[:16], y[:16], task="classification", prep=prep64)
    val = ArrayDataset(img[16:], y[16:], task="classification", prep=prep64)
    model = build_model("classification", "tiny", num_classes=2)
    cfg = FinetuneConfig(task="classification", num_classes=2, epochs=2, batch_size=8)
    evs = [e for e in finetune_steps(model, train, val, cfg) if e["kind"] == "epoch"]
    assert evs[-1]["selection"] == "val_loss" and evs[-1]["val_auc"] is not None
    assert 0.0 <= evs[-1]["val_auc"] <= 1.0


def test_one_class_validation_fold_gives_null_auc(prep64):
    img, y = make_classification_set(12, seed=2, size=64)
    train = ArrayDataset(img, y, task="classification", prep=prep64)
    val = ArrayDataset(img[y == 1], y[y == 1], task="classification", prep=prep64)
    model = build_model("classification", "tiny", num_classes=2)
    cfg = FinetuneConfig(task="classification", num_classes=2, epochs=1, batch_size=6)
    with pytest.warns(UserWarning):
        evs = [e for e in finetune_steps(model, train, val, cfg) if e["kind"] == "epoch"]
    assert evs[-1]["val_auc"] is None and np.isfinite(evs[-1]["val_loss"])
