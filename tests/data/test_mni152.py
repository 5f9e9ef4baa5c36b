"""The real labelled volume (MNI152 from nilearn): labels, orientation and leak-free splits."""
import numpy as np
import pytest

from training.data.mni152 import CLASSES, MNI152Unavailable, split_blocks


def test_split_blocks_keeps_gaps_between_splits():
    s = split_blocks(100, block=10, gap=5, pattern=("train", "val", "test"))
    owner = {}
    for name, idx in s.items():
        assert len(idx) == len(set(idx.tolist()))
        for i in idx.tolist():
            assert i not in owner
            owner[i] = name
    # every pair of slices in different splits is more than `gap` slices apart
    for a, na in owner.items():
        for b, nb in owner.items():
            if na != nb:
                assert abs(a - b) > 5
    assert sorted(s) == ["test", "train", "val"]
    assert s["train"][:10].tolist() == list(range(10))
    assert s["val"][:3].tolist() == [15, 16, 17]


def test_split_blocks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="block"):
        split_blocks(10, block=0)
    with pytest.raises(ValueError, match="pattern"):
        split_blocks(10, pattern=())


@pytest.fixture(scope="module")
def vol():
    from training.data.mni152 import load_mni152
    try:
        return load_mni152()
    except MNI152Unavailable as e:
        pytest.skip(f"needs nilearn's MNI152 files: {e}")


def test_volume_is_a_labelled_brain_in_radiological_axial_order(vol):
    assert vol.image.shape == vol.labels.shape and vol.image.ndim == 3
    assert vol.image.shape[1:] == (233, 197)
    assert set(np.unique(vol.labels).tolist()) == {c["index"] for c in CLASSES}
    # white matter is brighter than grey matter on T1
    gm = vol.image[vol.labels == 1].mean()
    wm = vol.image[vol.labels == 2].mean()
    assert wm > gm * 1.1
    # inferior to superior: z increases; the top slices are smaller than the middle ones
    assert np.all(np.diff(vol.z) > 0)
    area = (vol.labels > 0).sum(axis=(1, 2))
    assert area[len(area) // 2] > 2 * area[-1]
    # anterior up: the brain's frontal lobe reaches further from the centre at the top rows
    # than the cerebellum does at the bottom rows on a mid-level slice
    mid = vol.labels[len(area) // 2] > 0
    rows = np.nonzero(mid.any(axis=1))[0]
    assert rows[0] > 0 and rows[-1] < mid.shape[0] - 1


def test_default_splits_do_not_leak(vol):
    from training.data.mni152 import mni152_slices
    s = split_blocks(len(vol.z))
    ztr, zte = vol.z[s["train"]], vol.z[s["test"]]
    assert np.abs(ztr[:, None] - zte[None, :]).min() > 4
    im, m = mni152_slices("test")
    assert im.shape[0] == len(s["test"]) and m.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown split"):
        mni152_slices("holdout")
