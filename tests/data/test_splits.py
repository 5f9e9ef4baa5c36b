import numpy as np
import pytest

from training.data.splits import (
    default_num_folds,
    holdout_split,
    kfold_splits,
    label_fraction_subsets,
)


def test_kfold_disjoint_and_covering():
    folds = kfold_splits(23, 5, seed=1)
    tests = [t for _, t in folds]
    allt = np.concatenate(tests)
    assert sorted(allt.tolist()) == list(range(23))  # cover, no duplicates
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 23
    assert max(map(len, tests)) - min(map(len, tests)) <= 1


def test_kfold_groups_not_split_and_seeded():
    groups = [f"p{i // 4}" for i in range(40)]  # 10 patients x 4 slices
    folds = kfold_splits(40, 5, seed=0, groups=groups)
    for tr, te in folds:
        pts = {groups[i] for i in te}
        assert all(sum(groups[j] == g for j in te) == 4 for g in pts)  # whole patients
        assert not pts & {groups[i] for i in tr}
    again = kfold_splits(40, 5, seed=0, groups=groups)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=False))
    other = kfold_splits(40, 5, seed=1, groups=groups)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=False))


def test_kfold_stratified_labels():
    y = np.array([0] * 10 + [1] * 5)
    for _, te in kfold_splits(15, 5, seed=0, labels=y):
        assert (y[te] == 1).sum() == 1


def test_kfold_too_few():
    with pytest.raises(ValueError):
        kfold_splits(3, 5)


def test_paper_fold_rule():
    assert default_num_folds(3999) == 5 and default_num_folds(4000) == 1


def test_label_fractions_nested_and_seeded():
    fr = (0.05, 0.1, 0.25, 0.5, 0.8, 1.0)
    a = label_fraction_subsets(200, fr, seed=3)
    assert [len(a[f]) for f in fr] == [10, 20, 50, 100, 160, 200]
    for small, big in zip(fr, fr[1:], strict=False):
        assert set(a[small]) <= set(a[big])
    b = label_fraction_subsets(200, fr, seed=3)
    assert all(np.array_equal(a[f], b[f]) for f in fr)
    c = label_fraction_subsets(200, fr, seed=4)
    assert not np.array_equal(a[0.05], c[0.05])


def test_label_fractions_with_groups_and_minimum():
    groups = [i // 5 for i in range(50)]
    s = label_fraction_subsets(50, (0.01, 0.5), seed=0, groups=groups)
    assert len(s[0.01]) == 5  # at least one whole group
    assert len(s[0.5]) == 25 and set(s[0.01]) <= set(s[0.5])


def test_holdout_groups():
    groups = [i // 2 for i in range(20)]
    keep, out = holdout_split(20, 0.2, 0, groups)
    assert len(out) == 4 and not {groups[i] for i in keep} & {groups[i] for i in out}
