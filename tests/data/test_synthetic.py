import numpy as np
import pytest

from training.data import synthetic as S


def test_deterministic_and_seed_dependent():
    a_img, a_lab = S.make_slices(4, seed=3, size=48)
    b_img, b_lab = S.make_slices(4, seed=3, size=48)
    c_img, _ = S.make_slices(4, seed=4, size=48)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.allclose(a_img, c_img)


def test_realistic_intensities_and_all_classes():
    img, lab = S.make_slices(24, seed=1, size=96)
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert set(np.unique(lab)) == set(range(len(S.CLASSES)))
    # air outside the body, fat/soft tissue inside, bone bright
    assert np.median(img[:, 0, 0]) < -900
    for cls, lo, hi in ((1, 60, 160), (2, 70, 170), (3, 120, 230), (4, 200, 900)):
        med = np.median(img[lab == cls])
        assert lo < med < hi, (cls, med)
    assert img.std() > 0  # noise present


def test_volume_geometry_and_files(tmp_path):
    import pydicom
    vol, lab = S.make_volume(5, shape=(6, 32, 32), spacing=(3.0, 1.5, 1.5))
    assert vol.shape == lab.shape == (6, 32, 32)
    files = S.write_dicom_series(vol, tmp_path / "dcm", spacing=(3.0, 1.5, 1.5), seed=5)
    assert len(files) == 6
    ds = [pydicom.dcmread(f) for f in files]
    z = [float(d.ImagePositionPatient[2]) for d in ds]
    assert np.allclose(np.diff(z), 3.0)
    assert [float(v) for v in ds[0].PixelSpacing] == [1.5, 1.5]
    assert ds[0].Modality == "CT" and len({d.SeriesInstanceUID for d in ds}) == 1
    hu = ds[2].pixel_array * float(ds[2].RescaleSlope) + float(ds[2].RescaleIntercept)
    np.testing.assert_allclose(hu, np.round(vol[2]).clip(-1024), atol=0.5)
    # same seed -> same UIDs
    again = S.write_dicom_series(vol, tmp_path / "dcm2", spacing=(3.0, 1.5, 1.5), seed=5)
    assert pydicom.dcmread(again[0]).SOPInstanceUID == ds[0].SOPInstanceUID

    p = S.write_nifti(lab, tmp_path / "lab.nii.gz", spacing=(3.0, 1.5, 1.5))
    back, aff = S.read_nifti(p)
    np.testing.assert_array_equal(back, lab)
    assert np.allclose(np.diag(aff)[:3], [-1.5, -1.5, 3.0])  # RAS of the DICOM (LPS) placement


def test_classification_set_balanced():
    img, y = S.make_classification_set(20, seed=0, size=48)
    assert img.shape == (20, 48, 48) and sorted(set(y.tolist())) == [0, 1]
    assert y.sum() == 10


def test_negative_count_rejected():
    with pytest.raises(ValueError):
        S.make_slices(-1)


def test_no_variation_is_the_standard_phantom():
    a = S.make_slices(3, seed=5, size=48)
    for v in (None, "standard", S.Variation()):
        b = S.make_slices(3, seed=5, size=48, variation=v)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="unknown phantom variation"):
        S.make_slices(1, variation="extreme")


@pytest.mark.parametrize("knob", ["pose_deg", "shift", "scale", "elastic", "contrast_hu",
                                  "noise", "partial_volume"])
def test_each_variation_knob_changes_the_phantom_deterministically(knob):
    amount = {"pose_deg": 20.0, "contrast_hu": 30.0}.get(knob, 0.3)
    var = S.Variation(**{knob: amount})
    base_img, base_lab = S.make_slices(3, seed=2, size=48)
    img, lab = S.make_slices(3, seed=2, size=48, variation=var)
    img2, lab2 = S.make_slices(3, seed=2, size=48, variation=var)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert not np.array_equal(img, base_img)
    geometric = knob in ("pose_deg", "shift", "scale", "elastic")
    assert (not np.array_equal(lab, base_lab)) == geometric  # labels move with the anatomy only


def _liver_overlap(labels):
    m = labels == 1
    inter = (m[:, None] & m[None]).sum((2, 3))
    union = (m[:, None] | m[None]).sum((2, 3))
    iou = inter / np.maximum(union, 1)
    return iou[~np.eye(len(m), dtype=bool)].mean()


def test_hard_phantoms_vary_more_and_keep_labels_on_their_organs():
    _, std_lab = S.make_slices(16, seed=7, size=48)
    img, lab = S.make_slices(16, seed=7, size=48, variation="hard")
    assert _liver_overlap(lab) < _liver_overlap(std_lab) - 0.1
    assert set(np.unique(lab)) == set(range(len(S.CLASSES)))
    assert np.median(img[lab == 4]) > 200 and 0 < np.median(img[lab == 1]) < 200
    cls_img, cls_lab = S.make_classification_set(4, seed=1, size=48, variation="hard")
    assert cls_img.shape == (4, 48, 48) and not np.array_equal(
        cls_img, S.make_classification_set(4, seed=1, size=48)[0])


def test_png_folder_for_pretraining(tmp_path):
    from skimage.io import imread

    assert S.main([str(tmp_path / "ph"), "--n", "3", "--seed", "2", "--size", "32"]) == 0
    files = sorted((tmp_path / "ph").iterdir())
    assert [f.name for f in files] == [f"phantom_2_{i:05d}.png" for i in range(3)]
    img = imread(files[0])
    hu, _ = S.make_slices(3, seed=2, size=32)
    expect = (np.clip((hu[0] + 160) / 400, 0, 1) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img, expect)
