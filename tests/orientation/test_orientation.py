"""Issue 12 item 1: volumes are shown in the radiological convention whatever the file's
row/column directions; labels written from the display land on the file's own voxel grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.io.factory import make_series
from training.io import read_image
from training.io.volume import canonical_layout, edge_letters, to_source_grid
from training.io.writers import write_labels_dicom_seg, write_labels_nifti


@pytest.fixture(scope="module")
def upside_down_ct():
    """pydicom's abdominal CT stored with ImageOrientationPatient [1,0,0,0,-1,0]: its rows
    run posterior → anterior, so shown as stored it is upside down (table on top)."""
    path = get_testdata_file("explicit_VR-UN.dcm")
    ds = pydicom.dcmread(path)
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, -1, 0]
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return read_image(path)[0], hu


def test_upside_down_ct_is_shown_anterior_up(upside_down_ct):
    v, hu = upside_down_ct
    a = v.array
    assert a.shape == hu.shape == (512, 512)
    body = a > -300
    body_rows = np.where(body.sum(1) > 100)[0]  # rows crossing the patient (not the table)
    # the table: a thin bright arc below the body, i.e. in the bottom rows
    table_rows = [r for r in np.where((a > 0).any(1))[0] if r > body_rows.max()]
    assert table_rows and min(table_rows) > 0.65 * a.shape[0]
    assert (a[:100] <= -300).all()  # air above the anterior skin (stored: the table)
    # the spine (vertebral body, > 300 HU) is posterior: in the lower half of the body
    bone_r, bone_c = np.nonzero((a > 300) & body)
    spine = np.abs(bone_c - a.shape[1] / 2) < 30
    centre = (body_rows.min() + body_rows.max()) / 2
    assert np.median(bone_r[spine]) > centre
    # values untouched: only the rows were flipped
    np.testing.assert_array_equal(a, hu[::-1])
    assert v.metadata["orientation"]["plane"] == "axial"
    assert edge_letters(v.affine) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}


def test_labels_from_the_upside_down_ct_land_on_its_grid(tmp_path, upside_down_ct):
    v, hu = upside_down_ct
    lab = np.zeros(v.array.shape, np.uint8)
    lab[(v.array > 300)] = 4  # bone
    lab[100:160, 120:200] = 1  # an anterior, patient-right box in the display
    nii, seg = tmp_path / "l.nii.gz", tmp_path / "l.dcm"
    write_labels_nifti(nii, lab, v, segment_names={1: "box", 4: "bone"})
    write_labels_dicom_seg(seg, lab, v, segment_names={1: "box", 4: "bone"})
    on_source = lab[::-1]  # the file's own grid: rows posterior → anterior
    # NIfTI: stored (i, j) = (column, row) of the source grid
    stored = np.asarray(nib.load(nii).dataobj)
    np.testing.assert_array_equal(stored[:, :, 0].T if stored.ndim == 3 else stored.T, on_source)
    # DICOM-SEG: the frame references the CT image, on its pixel grid
    import highdicom as hd

    s = hd.seg.segread(seg)
    uid = pydicom.dcmread(get_testdata_file("explicit_VR-UN.dcm")).SOPInstanceUID
    px = s.get_pixels_by_source_instance([uid], combine_segments=True, relabel=False)
    values = {int(i.SegmentNumber): int(i.TrackingID.rsplit("-", 1)[1])
              for i in s.SegmentSequence}
    lut = np.zeros(max(values) + 1, np.uint8)
    for k, val in values.items():
        lut[k] = val
    np.testing.assert_array_equal(lut[np.asarray(px)[0]], on_source)
    # both reopen exactly on the displayed image
    for path in (nii, seg):
        back = read_image(path)[0]
        np.testing.assert_array_equal(back.array.reshape(lab.shape), lab)  # NIfTI: 1 slice
        np.testing.assert_allclose(back.affine[:3, 1:], v.affine[:3, 1:], atol=1e-4)


def _ras_volume():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, (12, 10, 6)).astype(np.int16)  # (i, j, k)
    data[0, 0, :] = 5000  # RAS +x is the patient's right, +y anterior: i=j=0 is the
    ras = np.diag([0.8, 0.9, 2.5, 1.0])  # patient's left, posterior corner
    ras[:3, 3] = (-5.0, -4.0, 10.0)
    return data, ras


def test_nifti_in_ras_and_lps_show_the_same_picture(tmp_path):
    data, ras = _ras_volume()
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "ras.nii.gz")
    # the same voxels stored LPS: i and j reversed, affine adjusted so every voxel keeps
    # its position in the patient
    flip = np.eye(4)
    flip[0, 0], flip[1, 1] = -1, -1
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    nib.save(nib.Nifti1Image(data[::-1, ::-1], ras @ flip), tmp_path / "lps.nii.gz")
    # and stored (j, i, k): columns and rows swapped
    swap = np.eye(4)[[1, 0, 2, 3]]
    nib.save(nib.Nifti1Image(data.transpose(1, 0, 2), ras @ swap), tmp_path / "jik.nii.gz")
    vols = [read_image(tmp_path / f"{n}.nii.gz")[0] for n in ("ras", "lps", "jik")]
    for v in vols[1:]:
        np.testing.assert_array_equal(v.array, vols[0].array)
        np.testing.assert_allclose(v.affine, vols[0].affine, atol=1e-6)
    a = vols[0].array
    # the left-posterior marker: bottom row (posterior), right column (patient left)
    assert (a[:, -1, -1] == 5000).all() and (a[:, :-1] != 5000).all()
    assert edge_letters(vols[0].affine) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    # labels written from the display reopen on each source grid voxel for voxel
    lab = (a > 500).astype(np.uint8)
    for v, name in zip(vols, ("ras", "lps", "jik"), strict=True):
        out = tmp_path / f"{name}_lab.nii.gz"
        write_labels_nifti(out, lab, v)
        src = np.asarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), (src > 500))
        np.testing.assert_array_equal(read_image(out)[0].array, lab)


@pytest.mark.parametrize(
    ("row_dir", "col_dir", "plane", "letters"),
    [
        ((1, 0, 0), (0, 1, 0), "axial", ("A", "P", "R", "L")),
        ((-1, 0, 0), (0, -1, 0), "axial", ("A", "P", "R", "L")),  # rotated 180°
        ((0, 1, 0), (1, 0, 0), "axial", ("A", "P", "R", "L")),  # transposed
        ((1, 0, 0), (0, 0, -1), "coronal", ("S", "I", "R", "L")),
        ((1, 0, 0), (0, 0, 1), "coronal", ("S", "I", "R", "L")),  # feet at the top
        ((0, 1, 0), (0, 0, -1), "sagittal", ("S", "I", "A", "P")),
        ((0, 0, -1), (0, -1, 0), "sagittal", ("S", "I", "A", "P")),  # transposed, flipped
    ],
)
def test_every_plane_is_shown_radiologically(tmp_path, row_dir, col_dir, plane, letters):
    make_series(tmp_path / "s", n=5, rows=12, cols=9, row_dir=row_dir, col_dir=col_dir)
    v = read_image(tmp_path / "s")[0]
    info = v.metadata["orientation"]
    assert info["plane"] == plane and info["oblique_deg"] == 0
    assert v.array.shape[0] == 5  # the acquisition plane stays the displayed plane
    e = edge_letters(v.affine)
    assert (e["top"], e["bottom"], e["left"], e["right"]) == letters
    # each displayed voxel is the stored voxel at the same patient position
    src = info["source_affine"]
    stored = to_source_grid(v.array, info)
    idx = np.array(np.unravel_index(np.arange(v.array.size), v.array.shape)).T
    src_idx = np.rint((v.index_to_lps(idx) - src[:3, 3]) @ np.linalg.inv(src[:3, :3]).T)
    np.testing.assert_array_equal(v.array[tuple(idx.T)], stored[tuple(src_idx.astype(int).T)])


def test_oblique_uses_the_nearest_axes_without_resampling(tmp_path):
    t = np.radians(12)
    row = (np.cos(t), np.sin(t), 0.0)
    col = (np.sin(t), -np.cos(t), 0.0)  # rows run anterior-ish: flipped for display
    make_series(tmp_path / "o", n=4, rows=10, cols=8, row_dir=row, col_dir=col)
    (v,) = read_image(tmp_path / "o")
    info = v.metadata["orientation"]
    assert info["plane"] == "axial" and abs(info["oblique_deg"] - 12) < 0.01
    assert "oblique" in info["note"] and any("oblique" in w for w in v.metadata["warnings"])
    src = to_source_grid(v.array, info)
    np.testing.assert_array_equal(v.array, src[::-1, ::-1])  # slices and rows flipped only
    assert edge_letters(v.affine)["top"] == "A"


def test_canonical_layout_round_trip_4d():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    aff = np.eye(4)
    aff[:3, :3] = [[0, 0, -1], [0, -1, 0], [1, 0, 0]]  # (k, j, i) → (−? ) sagittal-ish axes
    out, new, info = canonical_layout(a, aff)
    assert out.shape[0] == 2
    np.testing.assert_array_equal(
        np.stack([to_source_grid(o, info) for o in out]), a)


def test_training_pairs_a_flipped_series_with_its_nifti_labels(tmp_path):
    """Fine-tuning data (a DICOM series + the NIfTI labels saved from the viewer) is read in
    the same display layout as the plugin shows and segments it."""
    from training.data.file_datasets import VolumeFolderDataset
    from training.data.preprocessing import Preprocessing

    make_series(tmp_path / "images" / "case1", n=4, rows=16, cols=12, col_dir=(0, -1, 0))
    (v,) = read_image(tmp_path / "images" / "case1")
    lab = np.zeros(v.array.shape, np.uint8)
    lab[:, :5, :4] = 1  # anterior, patient-right corner as displayed
    (tmp_path / "labels").mkdir()
    write_labels_nifti(tmp_path / "labels" / "case1.nii.gz", lab, v)
    ds = VolumeFolderDataset(tmp_path / "images", tmp_path / "labels",
                             prep=Preprocessing(input_size=64, modality="CT"))
    _, arr, _, _, got = ds.volumes[0]
    np.testing.assert_array_equal(arr, v.array)
    np.testing.assert_array_equal(got, lab)


def test_synthetic_case_is_the_same_patient_as_nifti_and_dicom(tmp_path):
    from training.data.synthetic import write_case

    out = write_case(3, tmp_path, shape=(4, 32, 32))
    (nii,) = read_image(out["nifti"])
    (dcm,) = read_image(out["dicom"])
    # float NIfTI vs DICOM stored as uint16 (clipped at -1024 HU, rounded)
    np.testing.assert_allclose(np.maximum(nii.array, -1024), dcm.array, atol=1.0)
    np.testing.assert_allclose(nii.affine, dcm.affine, atol=1e-4)
