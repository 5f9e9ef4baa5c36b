"""Official VIS-MAE checkpoints: full-size key lists, architecture inference, safe loading."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from training.models import build_model
from training.models.blocks import relative_position_index
from training.weights.checkpoint import CheckpointError, init_from_checkpoint, load_any
from training.weights.official import infer_architecture, load_official_checkpoint, read_state_dict

# Counts measured on the official factories (reference report, §2.6/§3).
OFFICIAL = {
    "swin_mae": ("mae", (2, 2, 2, 2), None, 26_635_860),  # trainable (pos_embed is frozen)
    "swin_unet_nc2": ("segmentation", (2, 2, 6, 2), 2, 41_378_628),
    "swin_class_nc2": ("classification", (2, 2, 2, 2), 2, 20_414_924),
}


def _fake_state(shapes: dict) -> dict:
    state = {}
    for k, shape in shapes.items():
        if k.endswith("relative_position_index"):
            state[k] = relative_position_index(round(shape[0] ** 0.5))
        else:
            state[k] = torch.zeros(shape)
    return state


@pytest.fixture(scope="module")
def key_lists(reference_dir):
    return json.loads((reference_dir / "official_state_dict_keys_shapes.json").read_text())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_full_size_key_list_maps_completely(key_lists, name):
    task, depths, classes, n_params = OFFICIAL[name]
    entry = key_lists[name]
    shapes = next(v for v in entry.values() if isinstance(v, (dict, list)))
    if isinstance(shapes, list):
        shapes = {k: s for k, s in shapes}
    state = _fake_state(shapes)
    assert len(state) == entry["n_state_entries"]
    model, report = load_official_checkpoint({"model": state})
    assert (report.new, report.mismatched) == ([], [])
    assert set(report.loaded) | set(report.ignored) == set(state)
    assert model.cfg.depths == depths and model.cfg.embed_dim == 96
    assert model.cfg.num_heads == (3, 6, 12, 24) and model.cfg.window_size == 7
    assert getattr(model, "num_classes", None) == classes
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_official_file_with_namespace_args_loads(tmp_path, reference_dir):
    """The official save format pickles argparse.Namespace; it is allow-listed, nothing else."""
    ref = torch.load(reference_dir / "vismae_tiny" / "cls.pt", weights_only=True)
    path = tmp_path / "checkpoint-best.pth"
    wrapped = {f"module.{k}": v for k, v in ref["state_dict"].items()}
    torch.save({"model": wrapped, "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, path)
    model, card, report = load_any(path)
    assert card.task == "classification" and card.num_classes == 3
    assert card.prep.mean == 0.0 and card.prep.std == 1.0  # official fine-tune input is plain 0-1
    with torch.no_grad():
        torch.testing.assert_close(model(ref["input"]), ref["logits"], atol=1e-4, rtol=0)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}, "x": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="evil.pth.*refused to unpickle"):
        read_state_dict(path)
    assert not (tmp_path / "pwned_by_checkpoint").exists()


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
    (None, "no 'patch_embed.proj.weight'"),
])
def test_wrong_files_name_the_file_and_problem(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"model": {"conv.weight": torch.zeros(3)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"bad.pth: .*{reason}"):
        load_official_checkpoint(path)


def test_truncated_official_file(tmp_path, reference_dir):
    data = (reference_dir / "vismae_tiny" / "cls.pt").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_official_checkpoint(path)


def test_mae_initialises_official_depth_segmentation(reference_dir):
    """A (2,2,2,2) MAE into the official (2,2,6,2) U-Net: stage-3 blocks 2-5 stay new."""
    ref = torch.load(reference_dir / "vismae_tiny" / "mae.pt", weights_only=True)
    seg = build_model("segmentation", "tiny", num_classes=2, depths=(2, 2, 6, 2))
    before = seg.layers[2].blocks[4].attn.qkv.weight.clone()
    report = init_from_checkpoint(seg, ref["state_dict"])
    fresh_blocks = {k.split(".attn")[0].split(".mlp")[0].split(".norm")[0] for k in report.new
                    if ".blocks." in k}
    assert fresh_blocks == {f"{s}.blocks.{i}" for s in ("layers.2", "layers_up.0")
                            for i in range(2, 6)}
    assert "decoder_pred.weight" in report.ignored and "mask_token" in report.ignored
    assert torch.equal(seg.layers_up[1].blocks[0].attn.qkv.weight,
                       ref["state_dict"]["layers_up.1.blocks.0.attn.qkv.weight"])
    assert torch.equal(seg.layers[2].blocks[4].attn.qkv.weight, before)


def test_infer_architecture_rejects_unknown_task():
    state = build_model("classification", "tiny", num_classes=2).state_dict()
    del state["head.weight"]
    with pytest.raises(CheckpointError, match="cannot tell the task"):
        infer_architecture(state)
