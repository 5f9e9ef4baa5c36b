"""The Qt-free engine of the correct -> fine-tune loop: corrections, autosave, ranking,
sessions (stop, errors, out-of-memory) and versions."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from training.interactive.autosave import Autosave, work_dir_for
from training.interactive.corrections import (
    CorrectionError,
    CorrectionSet,
    split_validation,
    study_key,
    validate_sets,
)
from training.interactive.session import SessionConfig, run_session
from training.weights.versions import VersionStore

from .conftest import CORRECTED, KIDNEY


def _entry(store):
    return next(e for e in store.list() if e.name == "weak-tiny-seg")


# -- corrections --------------------------------------------------------------------------------
def test_correction_set_counts_dataset_and_keys(study):
    vol, lab = study
    cs = CorrectionSet(vol, lab, modality="CT")
    assert cs.key.startswith("sha256:") and cs.key == study_key(vol)
    assert study_key(vol, {"series_uid": "1.2.3", "patient_name": "DOE^JOHN"}) == "uid:1.2.3"
    cs.mark([2, 5])
    cs.mark(9)
    cs.unmark(5)
    with pytest.raises(IndexError):
        cs.mark(12)
    assert cs.training_slices() == [2, 9]
    counts = cs.class_counts(5)
    assert counts[0] == 2 and set(counts) == {0, 1, 2, 3, 4}
    assert counts[KIDNEY] == sum(int((lab[z] == KIDNEY).any()) for z in (2, 9))
    ds = cs.to_dataset()
    assert len(ds) == 2 and all("DOE" not in ds.load(i).name for i in range(2))
    np.testing.assert_array_equal(ds.load(1).target, lab[9])
    prov = cs.provenance([2], [9])
    assert prov["train_slices"] == [2] and prov["val_slices"] == [9]
    assert prov["study_key"] == cs.key and len(prov["labels_sha256"]) == 64


def test_empty_and_single_class_sets_are_refused_clearly(study):
    vol, lab = study
    with pytest.raises(CorrectionError, match="empty"):
        CorrectionSet(vol, lab).validate()
    with pytest.raises(CorrectionError, match="only background"):
        CorrectionSet(vol, np.zeros_like(lab), corrected={1, 2}).validate()
    with pytest.raises(CorrectionError, match="single class"):
        CorrectionSet(vol, np.ones_like(lab), corrected={1}).validate()
    with pytest.raises(CorrectionError, match="5 classes"):
        CorrectionSet(vol, lab * 2, corrected={4, 5}).validate(num_classes=5)
    with pytest.raises(CorrectionError, match="two classes"):
        validate_sets([CorrectionSet(vol, None, tags={0: 1, 1: 1}, task="classification")])
    CorrectionSet(vol, lab, corrected={5}).validate(num_classes=5)


def test_validation_split_modes():
    assert split_validation(list(range(10)), "auto")[2] == "hold-out"
    tr, va, how = split_validation(list(range(10)), "hold-out")
    assert len(va) == 2 and sorted(tr + va) == list(range(10))
    tr, va, how = split_validation([4, 7, 9], "auto")
    assert how == "leave-one-out" and len(va) == 1 and len(tr) == 2
    assert split_validation([3], "auto") == ([3], [], "none")
    assert split_validation([3, 4], "none") == ([3, 4], [], "none")


# -- autosave -----------------------------------------------------------------------------------
def test_autosave_roundtrip_is_atomic_and_keyed(tmp_path, study):
    vol, lab = study
    assert work_dir_for(tmp_path / "models") == (tmp_path / "work").resolve()
    saver = Autosave(tmp_path / "work")
    cs = CorrectionSet(vol, lab, corrected={2, 9})
    path = saver.save(cs)
    cs.mark(5)
    saver.save(cs)  # overwrite in place
    assert [p.name for p in (tmp_path / "work").iterdir()] == [path.name]  # no temp files left
    saved = saver.load(cs.key)
    assert saved.corrected == [2, 5, 9]
    np.testing.assert_array_equal(saved.labels, lab)
    assert saver.load("sha256:other") is None
    fresh = CorrectionSet(vol, np.zeros_like(lab))
    saved.apply(fresh)
    assert fresh.corrected == {2, 5, 9} and (fresh.labels == lab).all()
    path.write_bytes(b"garbage")  # an unreadable file is ignored, not raised
    assert saver.load(cs.key) is None


# -- ranking ------------------------------------------------------------------------------------
def test_uncertainty_ranking_puts_a_corrupted_slice_first(ft_store, study):
    from training.interactive.active_learning import rank_slices
    from training.weights.checkpoint import load_checkpoint

    vol, _ = study
    vol = vol.copy()
    rng = np.random.default_rng(1)
    vol[7] = rng.uniform(-200, 300, vol[7].shape)  # a corrupted slice (noise)
    model, card = load_checkpoint(_entry(ft_store).path)
    ranking = rank_slices(model, card, vol, modality="CT", exclude=[0])
    assert ranking.slices[0] == 7
    assert 0 not in ranking.slices and ranking.scores == sorted(ranking.scores, reverse=True)
    assert ranking.next_after(visited=[7]) == ranking.slices[1]


# -- sessions -----------------------------------------------------------------------------------
def _cs(study):
    vol, lab = study
    return CorrectionSet(vol, lab, corrected=set(CORRECTED), modality="CT")


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_stop_keeps_best_but_leaves_previous_version_active(ft_store, study):
    from training.weights.checkpoint import load_checkpoint

    base = _entry(ft_store)
    vs = VersionStore(ft_store.user_dir)
    model, card = load_checkpoint(base.path)
    v1 = vs.add_version(model, card, "weak-tiny-seg-corrected")
    before = _tree(v1.path)
    stop = threading.Event()
    events = []

    def on_event(ev):
        events.append(ev)
        if ev["kind"] == "epoch":
            stop.set()

    cfg = SessionConfig(steps=40, val_every=2, batch_size=2)
    res = run_session(v1, [_cs(study)], cfg, vs, stop_event=stop, on_event=on_event)
    assert res.status == "stopped" and res.entry.path.name == "v0002"
    assert vs.active("weak-tiny-seg-corrected").path == v1.path
    assert _tree(v1.path) == before
    assert res.entry.card.provenance["status"] == "stopped"
    assert events[-1]["kind"] == "saving" and any(e["kind"] == "stopped" for e in events)
    # stopped before any validation: nothing is written at all
    stop2 = threading.Event()
    stop2.set()
    snapshot = _tree(ft_store.user_dir)
    res2 = run_session(v1, [_cs(study)], cfg, vs, stop_event=stop2)
    assert res2.status == "stopped-unsaved" and res2.entry is None
    assert _tree(ft_store.user_dir) == snapshot


def test_error_mid_run_writes_nothing(ft_store, study, monkeypatch):
    import training.interactive.session as fs

    real = fs.finetune_steps

    def failing(*a, **k):
        for ev in real(*a, **k):
            yield ev
            if ev["kind"] == "step":
                raise RuntimeError("disk on fire")

    monkeypatch.setattr(fs, "finetune_steps", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_session(_entry(ft_store), [_cs(study)], SessionConfig(steps=4, val_every=2),
                    VersionStore(ft_store.user_dir))
    assert not ft_store.user_dir.exists() or not any(ft_store.user_dir.iterdir())


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_then_reports(ft_store, study, monkeypatch):
    import training.interactive.session as fs

    real = fs.finetune_steps

    def oom_above_1(model, train, val, cfg, *a, **k):
        if cfg.batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        yield from real(model, train, val, cfg, *a, **k)

    monkeypatch.setattr(fs, "finetune_steps", oom_above_1)
    events = []
    res = run_session(_entry(ft_store), [_cs(study)], SessionConfig(steps=2, val_every=2,
                                                                      batch_size=4),
                      VersionStore(ft_store.user_dir), on_event=events.append)
    assert [e["batch_size"] for e in events if e["kind"] == "oom"] == [1]
    assert res.status == "done"
    assert res.entry.card.provenance["hyperparameters"]["batch_size_used"] == 1

    def always_oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        yield

    monkeypatch.setattr(fs, "finetune_steps", always_oom)
    with pytest.raises(MemoryError, match="even with batch size 1"):
        run_session(_entry(ft_store), [_cs(study)], SessionConfig(steps=2, batch_size=2),
                    VersionStore(ft_store.user_dir))


@pytest.mark.slow
def test_finished_run_is_a_new_active_version_with_provenance(ft_store, study):
    base = _entry(ft_store)
    vs = VersionStore(ft_store.user_dir)
    res = run_session(base, [_cs(study)], SessionConfig(steps=4, val_every=2, batch_size=2), vs)
    lineage = "weak-tiny-seg-corrected"
    assert res.status == "done" and res.lineage == lineage
    assert [v.path.name for v in vs.versions(lineage)] == ["v0001", "v0002"]
    assert vs.active(lineage).path == res.entry.path
    v1 = vs.versions(lineage)[0]
    assert v1.card.weights_sha256 == base.card.weights_sha256 or \
        v1.card.provenance["imported_from"]["weights_sha256"] == base.card.weights_sha256
    prov = res.entry.card.provenance
    assert prov["parent"]["path"] == "v0001"
    assert prov["data"]["validation"] == "leave-one-out"
    study_prov = prov["data"]["studies"][0]
    assert sorted(study_prov["train_slices"] + study_prov["val_slices"]) == list(CORRECTED)
    assert study_prov["study_key"].startswith("sha256:")
    assert prov["hyperparameters"]["mode"] == "decoder" and prov["duration_s"] > 0
    assert prov["metrics"]["selection"] == "val_dice" and prov["metrics"]["start"] is not None
    # the next run continues the lineage from the active version
    res2 = run_session(res.entry, [_cs(study)], SessionConfig(steps=2, val_every=2,
                                                               batch_size=2), vs)
    assert res2.entry.path.name == "v0003" and res2.entry.card.provenance["parent"]["path"] \
        == "v0002"
    vs.set_active(lineage, "v0001")  # rollback
    assert vs.active(lineage).path.name == "v0001"


def test_classification_tags_train_a_head_version(ft_store, cls_model, study):
    vol, _ = study
    cs = CorrectionSet(vol, None, task="classification", modality="CT")
    cs.tag([0, 1, 2], 0)
    cs.tag([9, 10, 11], 1)
    assert cs.class_counts(2) == {0: 3, 1: 3} and cs.training_slices() == [0, 1, 2, 9, 10, 11]
    res = run_session(cls_model, [cs], SessionConfig(steps=2, val_every=2, batch_size=2,
                                                     validation="leave-one-out"),
                      VersionStore(ft_store.user_dir))
    assert res.status == "done" and res.metric == "val_accuracy"
    assert res.entry.card.task == "classification"
    assert res.entry.card.provenance["hyperparameters"]["mode"] == "head"  # decoder -> head
    assert res.lineage == "tiny-cls-corrected"
