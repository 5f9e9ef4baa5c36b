"""Label writers: DICOM-SEG referencing the source series (highdicom), NIfTI from DICOM, PNG."""

import highdicom as hd
import imageio.v3 as iio
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from training.io import (
    ImageWriteError,
    read_image,
    write_labels,
    write_labels_dicom_seg,
    write_labels_png,
)
from training.io.writers import write_labels_nifti

from .factory import make_series


@pytest.fixture
def oblique_series(tmp_path):
    row = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    col = np.array([0.0, 0.0, -1.0])
    gt = make_series(tmp_path / "src", n=6, row_dir=row, col_dir=col, spacing=2.0)
    return read_image(tmp_path / "src")[0], gt


def _labels(shape):
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 3:9, 2:8] = 1
    lab[4, 10:14, 10:14] = 5
    return lab


def test_dicom_seg_references_source_and_reopens_aligned(tmp_path, oblique_series):
    v, gt = oblique_series
    lab = _labels(v.array.shape)
    out = tmp_path / "seg.dcm"
    write_labels_dicom_seg(
        out,
        lab,
        v,
        segment_names={1: "Liver", 5: "Lesion"},
        colors={1: (255, 0, 0), 5: (0, 0.5, 1.0)},
        algorithm_name="VIS-MAE-test",
    )
    seg = hd.seg.segread(out)
    assert seg.StudyInstanceUID == gt["study_uid"]
    assert seg.FrameOfReferenceUID == gt["frame_uid"]
    refs = {r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence}
    assert refs == {gt["series_uid"]}
    ref_sops = {
        i.ReferencedSOPInstanceUID
        for r in seg.ReferencedSeriesSequence
        for i in r.ReferencedInstanceSequence
    }
    assert ref_sops == set(v.metadata["sop_instance_uids"])
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["Liver", "Lesion"]
    assert (
        seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
        == "VIS-MAE-test"
    )
    rgb = hd.color.CIELabColor.from_dicom_value(
        seg.SegmentSequence[0].RecommendedDisplayCIELabValue
    ).to_rgb()
    assert tuple(rgb) == pytest.approx((255, 0, 0), abs=2)
    # reopen through our reader: same grid, same affine, same values
    back = read_image(out)[0]
    assert back.kind == "labels"
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, lab)
    assert back.metadata["label_names"] == {1: "Liver", 5: "Lesion"}


def test_dicom_seg_on_enhanced_multiframe(tmp_path):
    p = get_testdata_file("eCT_Supplemental.dcm")
    if p is None:
        pytest.skip("pydicom-data not installed")
    v = read_image(p)[0]
    lab = np.zeros(v.array.shape, np.uint8)
    lab[0, 100:200, 100:200] = 1
    lab[1, 300:310, 300:310] = 2
    out = tmp_path / "seg_mf.dcm"
    write_labels_dicom_seg(out, lab, v)
    back = read_image(out)[0]
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, lab)


def test_dicom_seg_errors(tmp_path, oblique_series):
    v, _ = oblique_series
    with pytest.raises(ImageWriteError, match="empty"):
        write_labels_dicom_seg(tmp_path / "e.dcm", np.zeros(v.array.shape, np.uint8), v)
    with pytest.raises(ImageWriteError, match="slices"):
        write_labels_dicom_seg(tmp_path / "e.dcm", np.ones((2, 24, 20), np.uint8), v)
    nifti_like = {"source_kind": "nifti", "affine": np.eye(4)}
    with pytest.raises(ImageWriteError, match="NIfTI instead"):
        write_labels_dicom_seg(tmp_path / "e.dcm", np.ones((2, 3, 3), np.uint8), nifti_like)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".*tmp"))


def test_nifti_from_dicom_is_aligned(tmp_path, oblique_series):
    import nibabel as nib

    v, _ = oblique_series
    lab = _labels(v.array.shape)
    out = tmp_path / "lab.nii.gz"
    write_labels(out, lab, v)
    img = nib.load(out)
    data = np.asarray(img.dataobj)
    for k, j, i in [(2, 5, 4), (4, 11, 12), (0, 0, 0)]:
        assert data[i, j, k] == lab[k, j, i]
        ras = img.affine @ [i, j, k, 1]
        np.testing.assert_allclose([-ras[0], -ras[1], ras[2]], v.index_to_lps((k, j, i)), atol=1e-4)
    back = read_image(out)[0]  # reoriented for display (see nifti.py), but every voxel in place
    m = np.linalg.inv(v.affine) @ back.affine
    idx = np.indices(back.array.shape).reshape(3, -1).T
    kji = idx @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(kji, np.round(kji), atol=1e-3)
    kji = np.round(kji).astype(int)
    np.testing.assert_array_equal(back.array.reshape(-1), lab[kji[:, 0], kji[:, 1], kji[:, 2]])


def test_png_labels(tmp_path):
    lab = np.zeros((30, 40), np.uint16)
    lab[5:10, 5:20] = 3
    write_labels_png(tmp_path / "l.png", lab)
    np.testing.assert_array_equal(iio.imread(tmp_path / "l.png"), lab)
    lab[0, 0] = 1000
    write_labels(tmp_path / "l16.png", lab)
    np.testing.assert_array_equal(iio.imread(tmp_path / "l16.png"), lab)
    with pytest.raises(ImageWriteError, match="2-D"):
        write_labels_png(tmp_path / "x.png", np.zeros((2, 3, 4), np.uint8))


def test_writes_are_atomic(tmp_path, monkeypatch, oblique_series):
    v, _ = oblique_series
    target = tmp_path / "keep.nii.gz"
    target.write_bytes(b"old")
    import nibabel as nib

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Image, "to_bytes", boom)
    with pytest.raises(OSError):
        write_labels_nifti(target, _labels(v.array.shape), v)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_seg_from_pydicom_data_reads_as_labels():
    p = get_testdata_file("liver.dcm")
    if p is None:
        pytest.skip("pydicom-data not installed")
    v = read_image(p)[0]
    seg = pydicom.dcmread(p)
    assert v.kind == "labels" and v.metadata["label_names"] == {1: "Liver"}
    assert v.array.shape == (int(seg.NumberOfFrames), seg.Rows, seg.Columns)
