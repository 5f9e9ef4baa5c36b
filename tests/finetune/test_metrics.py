import numpy as np
import pytest

from training.finetune.metrics import (
    SegmentationMeter,
    UndefinedMetricWarning,
    classification_metrics,
    confusion_matrix_labels,
    dice_per_class,
    overlap_from_confusion,
)


def test_perfect_and_empty():
    t = np.array([[0, 1], [1, 2]])
    d = dice_per_class(t, t, 4)
    assert d.tolist() == [1.0, 1.0, 1.0, 1.0]  # class 3 absent from both: 1 by convention


def test_disjoint():
    t = np.array([[1, 1], [0, 0]])
    p = np.array([[0, 0], [1, 1]])
    s = overlap_from_confusion(confusion_matrix_labels(p, t, 2))
    assert s["dice"][1] == 0 and s["precision"][1] == 0 and s["recall"][1] == 0


def test_partial_overlap_hand_computed():
    # truth: 4 pixels of class 1; prediction: 3 pixels, 2 of them right
    t = np.array([[1, 1, 1, 1, 0, 0]])
    p = np.array([[1, 1, 0, 0, 1, 0]])
    s = overlap_from_confusion(confusion_matrix_labels(p, t, 2))
    assert s["dice"][1] == pytest.approx(2 * 2 / (3 + 4))
    assert s["precision"][1] == pytest.approx(2 / 3)
    assert s["recall"][1] == pytest.approx(2 / 4)


def test_missed_and_spurious_classes_score_zero_not_nan():
    t = np.array([[1, 0]])
    p = np.array([[0, 2]])
    s = overlap_from_confusion(confusion_matrix_labels(p, t, 3))
    assert s["precision"][1] == 0 and s["recall"][1] == 0 and s["dice"][1] == 0
    assert s["precision"][2] == 0 and s["recall"][2] == 0 and s["dice"][2] == 0
    assert not np.isnan(np.concatenate([s["dice"], s["precision"], s["recall"]])).any()


def test_meter_per_image_and_pooled():
    t = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    p = np.array([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
    m = SegmentationMeter(2, ["bg", "fg"])
    m.update(p[0], t[0])
    m.update(p[1], t[1])
    r = m.result()
    # image 1: Dice 2/3; image 2: empty/empty = 1 -> per-image mean 5/6; pooled 2/3
    assert r["mean_dice"] == pytest.approx(5 / 6)
    assert r["mean_dice_pooled"] == pytest.approx(2 / 3)
    assert r["confusion_matrix"] == [[6, 0], [1, 1]]
    assert r["per_class"][1]["recall_pooled"] == pytest.approx(0.5)


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix_labels(np.array([0, 5]), np.array([0, 1]), 3)


def test_binary_auc_known_ranking():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - s, s], 1)
    r = classification_metrics(y, probs)
    assert r["roc_auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered
    # AP: ranking 0.8(+), 0.4(-), 0.35(+), 0.1(-) -> (1/1 + 2/3) / 2
    assert r["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert r["confusion_matrix"] == [[2, 0], [1, 1]]
    assert r["accuracy"] == 0.75


def test_perfect_multiclass_ovr():
    y = np.array([0, 1, 2, 2])
    probs = np.eye(3)[y] * 0.8 + 0.2 / 3
    r = classification_metrics(y, probs, ["a", "b", "c"])
    assert r["roc_auc"] == pytest.approx(1.0) and r["pr_auc"] == pytest.approx(1.0)
    assert [c["name"] for c in r["per_class"]] == ["a", "b", "c"]


def test_single_class_auc_is_none_with_warning():
    y = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    with pytest.warns(UndefinedMetricWarning):
        r = classification_metrics(y, probs)
    assert r["roc_auc"] is None and r["pr_auc"] is None
    assert r["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_absent_class_warns_and_averages_rest():
    y = np.array([0, 1, 0, 1])
    probs = np.array([[.7, .2, .1], [.1, .8, .1], [.6, .3, .1], [.2, .7, .1]])
    with pytest.warns(UndefinedMetricWarning):
        r = classification_metrics(y, probs)
    assert r["per_class"][2]["roc_auc"] is None
    assert r["roc_auc"] == pytest.approx(1.0)


def test_nan_probabilities_rejected():
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1], [[np.nan, 1.0], [0.5, 0.5]])
