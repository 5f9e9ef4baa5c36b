"""The Qt-free engine of the correct -> fine-tune loop: corrections, autosave, ranking,
sessions (stop, errors, out-of-memory) and versions."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from training.interactive.autosave import Autosave, AutosaveError, work_dir_for
from training.interactive.corrections import (
    CorrectionError,
    CorrectionSet,
    kfold,
    study_key,
    validate_sets,
    validation_plan,
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


def test_validation_plan_and_folds():
    assert validation_plan(2) == "too-few" and validation_plan(3) == "k-fold"
    assert validation_plan(10, "none") == "none"
    with pytest.raises(ValueError, match="validation must be one of"):
        validation_plan(5, "hold-out")
    folds = kfold(list(range(10)), 3, seed=1)
    assert len(folds) == 3 and sorted(sum(folds, [])) == list(range(10))
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert sorted(map(len, kfold([4, 7, 9], 5))) == [1, 1, 1]  # leave-one-out


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

@pytest.mark.parametrize("damage", ["empty", "truncated", "crc"])
def test_corrupt_autosave_is_a_clear_error_and_moved_aside(tmp_path, study, damage):
    vol, lab = study
    saver = Autosave(tmp_path / "work")
    cs = CorrectionSet(vol, lab, corrected={2, 9})
    path = saver.save(cs)
    raw = bytearray(path.read_bytes())
    if damage == "empty":
        raw = bytearray()
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # flip bytes inside the compressed labels: the zip CRC check fails
        mid = len(raw) // 2
        raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    path.write_bytes(bytes(raw))
    with pytest.raises(AutosaveError, match=path.name) as err:
        saver.load(cs.key)
    assert "moved aside" in str(err.value)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    assert saver.load(cs.key) is None  # gone: the next save starts afresh


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
    # next: the most uncertain slice that is not a neighbour of the visited one
    gap = ranking.n_slices // 4
    nxt = ranking.next_after(visited=[7])
    assert abs(nxt - 7) >= gap
    assert nxt == next(s for s in ranking.slices if abs(s - 7) >= gap)


# -- sessions -----------------------------------------------------------------------------------
def _cs(study):
    vol, lab = study
    return CorrectionSet(vol, lab, corrected=set(CORRECTED), modality="CT")


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_stop_during_validation_saves_inactive_and_before_saves_nothing(ft_store, study):
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
        if ev["kind"] == "phase" and ev["phase"] == "fold":
            stop.set()  # trained on all slices; stopped in the cross-validation

    cfg = SessionConfig(steps=4, val_every=2, batch_size=2)
    res = run_session(v1, [_cs(study)], cfg, vs, stop_event=stop, on_event=on_event)
    assert res.status == "stopped" and res.entry.path.name == "v0002" and not res.active
    assert vs.active("weak-tiny-seg-corrected").path == v1.path
    assert _tree(v1.path) == before
    assert res.entry.card.provenance["status"] == "stopped"
    assert res.best_score is None and "stays active" in res.message
    assert events[-1]["kind"] == "saving" and any(e["kind"] == "stopped" for e in events)
    # stopped while training on all slices: nothing is written at all
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


def test_kfold_scores_every_corrected_slice_per_class(ft_store, study):
    """>= 3 corrected slices: trained on all, judged by 3-fold cross-validation; per-class
    Dice with the slices behind it, next to the starting model's on the same slices."""
    base = _entry(ft_store)
    vs = VersionStore(ft_store.user_dir)
    events = []
    res = run_session(base, [_cs(study)], SessionConfig(steps=4, val_every=2, batch_size=2),
                      vs, on_event=events.append)
    lineage = "weak-tiny-seg-corrected"
    assert res.validation == "k-fold" and res.metric == "cv_dice" and res.n_val == 3
    phases = [(e["phase"], e["fold"]) for e in events if e["kind"] == "phase"]
    assert phases == [("train", None), ("fold", 1), ("fold", 2), ("fold", 3)]
    assert events[0]["total_steps"] == 16  # 4 steps on all + 3 folds x 4
    _, truth = study
    for c in res.per_class:
        assert c["n_slices"] == sum(int((truth[z] == c["index"]).any()) for z in CORRECTED)
        assert 0 <= c["score"] <= 1 and 0 <= c["start"] <= 1
    assert {c["index"] for c in res.per_class} == {c for z in CORRECTED
                                                   for c in np.unique(truth[z]) if c}
    assert res.best_score == pytest.approx(np.mean([c["score"] for c in res.per_class]))
    prov = res.entry.card.provenance
    assert sorted(sum(prov["data"]["folds"], [])) == list(CORRECTED)
    assert prov["metrics"]["per_class"] == res.per_class and prov["metrics"]["n_val_slices"] == 3
    assert "3-slice cross-validated" in res.message
    # judged by the numbers: active if not worse than the starting model
    assert res.active == (not res.judged_worse) == (res.best_score >= res.start_score)
    assert (vs.active(lineage).path == res.entry.path) == res.active
    prov1 = vs.versions(lineage)[0].card.provenance
    assert prov1["imported_from"]["weights_sha256"] == base.card.weights_sha256


def test_run_judged_worse_is_saved_but_not_active(ft_store, study):
    base = _entry(ft_store)
    vs = VersionStore(ft_store.user_dir)
    res = run_session(base, [_cs(study)], SessionConfig(mode="full", lr=5.0, steps=2, val_every=2,
                                                        batch_size=3, augment=False), vs)
    assert res.judged_worse and res.best_score < res.start_score
    assert res.entry is not None and not res.active and res.status == "done"
    assert vs.active("weak-tiny-seg-corrected").path.name == "v0001"  # the base copy
    assert "judged WORSE" in res.message and "Make active" in res.message
    vs.set_active("weak-tiny-seg-corrected", res.entry.path.name)  # the user decides


def test_too_few_corrected_slices_give_no_number(ft_store, study):
    vol, lab = study
    vs = VersionStore(ft_store.user_dir)
    events = []
    res = run_session(_entry(ft_store), [CorrectionSet(vol, lab, corrected={2, 9})],
                      SessionConfig(steps=2, val_every=2, batch_size=2), vs,
                      on_event=events.append)
    assert res.validation == "too-few" and res.best_score is None and res.per_class == []
    assert "too few corrected slices to validate" in res.message
    assert not any(e["kind"] in ("baseline", "cv") for e in events)
    assert not any("score" in e for e in events)
    assert res.active and res.entry.card.provenance["metrics"]["best"] is None


@pytest.mark.slow
def test_finished_run_continues_the_lineage_and_rolls_back(ft_store, study):
    base = _entry(ft_store)
    vs = VersionStore(ft_store.user_dir)
    lineage = "weak-tiny-seg-corrected"
    res = run_session(base, [_cs(study)], SessionConfig(steps=2, val_every=2, batch_size=2,
                                                        validation="none"), vs)
    assert res.status == "done" and res.active and res.validation == "none"
    prov = res.entry.card.provenance
    assert prov["parent"]["path"] == "v0001" and prov["duration_s"] > 0
    study_prov = prov["data"]["studies"][0]
    assert study_prov["train_slices"] == list(CORRECTED)
    assert study_prov["study_key"].startswith("sha256:")
    res2 = run_session(res.entry, [_cs(study)], SessionConfig(steps=2, val_every=2,
                                                               batch_size=2,
                                                               validation="none"), vs)
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
    res = run_session(cls_model, [cs], SessionConfig(steps=2, val_every=2, batch_size=2),
                      VersionStore(ft_store.user_dir))
    assert res.status == "done" and res.metric == "cv_accuracy" and res.n_val == 6
    assert res.entry.card.task == "classification"
    assert res.entry.card.provenance["hyperparameters"]["mode"] == "head"  # decoder -> head
    assert res.lineage == "tiny-cls-corrected"
