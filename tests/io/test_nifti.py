"""NIfTI reading (nibabel test data: oblique, 4-D, NIfTI-2) and the bit-exact affine round trip."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from training.io import ImageReadError, read_image, write_labels_nifti

FILES = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "standard.nii.gz",
    "reoriented_anat_moved.nii",
    "functional.nii",
]


def _p(name):
    return os.path.join(data_path, name)


@pytest.mark.parametrize("name", FILES)
def test_values_and_affine_match_nibabel(name):
    img = nib.load(_p(name))
    v = read_image(_p(name))[0]
    data = img.get_fdata()
    rng = np.random.default_rng(0)
    spatial = data.shape[:3]
    for _ in range(20):  # every voxel is where the NIfTI affine says it is, with the same value
        ijk = [int(rng.integers(0, s)) for s in spatial]
        t = int(rng.integers(0, data.shape[3])) if data.ndim == 4 else None
        ras = img.affine @ [*ijk, 1]
        lps = np.array([-ras[0], -ras[1], ras[2]])
        kji = np.linalg.solve(v.affine[:3, :3], lps - v.affine[:3, 3])
        idx = tuple(int(round(c)) for c in kji)
        np.testing.assert_allclose(kji, idx, atol=1e-4)
        got = v.array[(t, *idx)] if t is not None else v.array[idx]
        exp = data[(*ijk, t)] if t is not None else data[tuple(ijk)]
        assert got == pytest.approx(exp, rel=1e-6, abs=1e-6)
    assert v.metadata["source_kind"] == "nifti"
    np.testing.assert_array_equal(v.metadata["nifti"]["affine"], img.affine)


def test_display_orientation_is_lps_like():
    # every reoriented volume has columns → patient left, rows → posterior, slices → superior
    for name in FILES:
        v = read_image(_p(name))[0]
        d = v.direction  # columns: slice, row, column in LPS
        assert np.argmax(np.abs(d[:, 2])) == 0 and d[0, 2] > 0
        assert np.argmax(np.abs(d[:, 1])) == 1 and d[1, 1] > 0
        assert np.argmax(np.abs(d[:, 0])) == 2 and d[2, 0] > 0


def _oblique_affine():
    img = nib.load(_p("anatomical.nii"))
    oblique = img.affine.copy()
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    oblique[:3, :3] = rot @ oblique[:3, :3]
    return oblique


@pytest.mark.parametrize("name", FILES + ["oblique"])
def test_labels_round_trip_keeps_affine_bit_for_bit(tmp_path, name):
    if name == "oblique":
        src = nib.load(_p("anatomical.nii"))
        img = nib.Nifti1Image(np.asarray(src.dataobj), _oblique_affine(), src.header)
        path = tmp_path / "oblique.nii.gz"
        nib.save(img, path)
        path = str(path)
    else:
        path = _p(name)
    src = nib.load(path)
    v = read_image(path)[0]
    vol3 = v.array[0] if v.array.ndim == 4 else v.array
    labels = (vol3 > np.median(vol3)).astype(np.uint8)
    labels[0, 0, 0] = 2
    out = tmp_path / f"labels_{os.path.basename(path)}"
    write_labels_nifti(out, labels, v)
    back = nib.load(out)
    assert np.array_equal(back.affine, src.affine)  # bit for bit
    assert np.array_equal(back.header.get_sform(), src.header.get_sform())
    assert np.array_equal(back.header.get_qform(), src.header.get_qform())
    assert back.header.get_sform(coded=True)[1] == src.header.get_sform(coded=True)[1]
    assert back.shape == src.shape[:3]
    ref = np.asarray(src.dataobj)
    ref = ref[..., 0] if ref.ndim == 4 else ref
    np.testing.assert_array_equal(
        np.asarray(back.dataobj) == 1, (ref > np.median(ref)) & (np.asarray(back.dataobj) != 2)
    )
    again = read_image(out)[0]  # and it reopens aligned with the image
    assert again.kind == "labels"
    np.testing.assert_array_equal(again.array, labels)
    np.testing.assert_allclose(again.affine, v.affine, atol=1e-5)


def test_truncated_gz_is_a_clear_error(tmp_path):
    raw = open(_p("example4d.nii.gz"), "rb").read()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError) as ei:
        read_image(bad)
    assert str(bad) in str(ei.value) and "truncated" in ei.value.reason


def test_garbage_nii_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.nii"
    bad.write_bytes(b"not a nifti header" * 10)
    with pytest.raises(ImageReadError, match="garbage.nii"):
        read_image(bad)
    badgz = tmp_path / "garbage.nii.gz"
    badgz.write_bytes(gzip.compress(b"\x00" * 20))
    with pytest.raises(ImageReadError, match="garbage.nii.gz"):
        read_image(badgz)


def test_4d_layout():
    v = read_image(_p("example4d.nii.gz"))[0]
    img = nib.load(_p("example4d.nii.gz"))
    assert v.array.shape[0] == img.shape[3] and v.array.ndim == 4
    scale, translate = v.display_scale_translate()
    assert len(scale) == 4 and scale[0] == 1.0
