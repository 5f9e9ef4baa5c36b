"""DICOM series/multi-frame reading against known geometry and pydicom's own LUTs."""

import logging
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from training.io import ImageReadError, MissingDecoderError, read_image
from training.io import dicom as dcm
from training.io.volume import to_source_grid

from .factory import make_series, stored_values


def _testfile(name):
    p = get_testdata_file(name)
    if p is None:
        pytest.skip(f"{name} not available (pydicom-data missing?)")
    return p


def test_shuffled_series_is_sorted_by_position_with_geometry(tmp_path):
    gt = make_series(tmp_path / "ct", n=9, spacing=2.5, pixel_spacing=(0.8, 0.7))
    vols = read_image(tmp_path / "ct")
    assert len(vols) == 1 and not vols.report.skipped
    v = vols[0]
    assert v.array.shape == (9, 24, 20)
    for k in range(9):  # slice k holds stored values of slice k, rescaled to HU
        np.testing.assert_array_equal(v.array[k], stored_values(k, 24, 20).astype(np.int32) - 1024)
    np.testing.assert_allclose(v.spacing, (2.5, 0.8, 0.7))
    np.testing.assert_allclose(v.origin, gt["origin"])
    np.testing.assert_allclose(
        v.index_to_lps((8, 23, 19)), gt["origin"] + [19 * 0.7, 23 * 0.8, 8 * 2.5]
    )
    assert v.modality == "CT" and v.window == (40.0, 400.0)
    assert v.name == "CT Synthetic"
    assert v.metadata["units"] == "HU"
    assert v.metadata["series_uid"] == gt["series_uid"]
    # per-slice UIDs and files are in display order
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in v.metadata["files"]]
    assert sops == v.metadata["sop_instance_uids"]
    ks = [
        int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) - 1
        for f in v.metadata["files"]
    ]
    assert ks == list(range(9))


def test_oblique_orientation_gives_full_affine(tmp_path):
    a = np.deg2rad(30)
    row = (np.cos(a), np.sin(a), 0.0)
    col = np.array([-np.sin(a) * 0.2, np.cos(a) * 0.2, -1.0])
    col -= np.dot(col, row) * np.asarray(row)
    col /= np.linalg.norm(col)
    make_series(tmp_path / "obl", n=5, spacing=3.0, row_dir=row, col_dir=col, origin=(10, 20, 30))
    v = read_image(tmp_path / "obl")[0]
    normal = np.cross(row, col)
    for k, j, i in [(0, 0, 0), (4, 0, 0), (2, 5, 7), (4, 23, 19)]:
        expect = (
            np.array([10, 20, 30]) + k * 3.0 * normal + j * 0.8 * col + i * 0.7 * np.asarray(row)
        )
        np.testing.assert_allclose(v.index_to_lps((k, j, i)), expect, atol=1e-4)
    np.testing.assert_allclose(v.direction.T @ v.direction, np.eye(3), atol=1e-5)
    # (column, row, slice) = (i, j, k) is right-handed: slice direction = row_dir x col_dir
    assert np.linalg.det(v.direction[:, ::-1]) > 0
    np.testing.assert_array_equal(v.array[3], stored_values(3, 24, 20).astype(np.int32) - 1024)


def test_slices_ordered_along_normal_not_by_z(tmp_path):
    # sagittal: slices stack along -x; ordering by position · normal, not by InstanceNumber/name
    make_series(tmp_path / "sag", n=6, row_dir=(0, 1, 0), col_dir=(0, 0, -1), spacing=1.5)
    v = read_image(tmp_path / "sag")[0]
    steps = np.diff([v.index_to_lps((k, 0, 0)) for k in range(6)], axis=0)
    np.testing.assert_allclose(steps, [[-1.5, 0, 0]] * 5, atol=1e-6)
    np.testing.assert_array_equal(v.array[5], stored_values(5, 24, 20).astype(np.int32) - 1024)


def test_uneven_spacing_and_gap_warn(tmp_path, caplog):
    offsets = [0, 2, 4, 6, 12, 14, 16.5]
    make_series(tmp_path / "gap", n=7, offsets=offsets)
    with caplog.at_level(logging.WARNING):
        vols = read_image(tmp_path / "gap")
    v = vols[0]
    assert v.array.shape[0] == 7
    assert any("uneven slice spacing" in w and "gap" in w for w in vols.report.warnings)
    assert any("uneven" in w for w in v.metadata["warnings"])
    assert v.spacing[0] == pytest.approx(2.0)
    np.testing.assert_allclose(v.metadata["slice_positions"], np.array(offsets) + 50.0)
    assert "PHANTOM" not in caplog.text and "Phantom" not in caplog.text  # no patient identifiers


def test_several_series_in_one_folder(tmp_path):
    study = pydicom.uid.generate_uid()
    make_series(tmp_path / "study", n=4, description="Axial", study_uid=study, prefix="a")
    make_series(
        tmp_path / "study",
        n=3,
        modality="MR",
        slope=None,
        window=None,
        description="T1",
        study_uid=study,
        prefix="b",
        series_number=2,
    )
    vols = read_image(tmp_path / "study")
    names = sorted(v.name for v in vols)
    assert names == ["CT Axial", "MR T1"]
    mr = next(v for v in vols if v.modality == "MR")
    assert mr.array.dtype == np.uint16 and mr.window is None
    np.testing.assert_array_equal(mr.array[2], stored_values(2, 24, 20))


def test_instance_number_fallback_without_positions(tmp_path):
    make_series(tmp_path / "nopos", n=5, positions=False)
    vols = read_image(tmp_path / "nopos")
    v = vols[0]
    for k in range(5):
        assert int(v.array[k, 0, 0]) == int(stored_values(k, 24, 20)[0, 0]) - 1024
    assert any("InstanceNumber" in w for w in vols.report.warnings)


def test_mixed_shapes_load_majority_and_report_rest(tmp_path):
    shapes = [(24, 20)] * 5 + [(16, 16)]
    make_series(tmp_path / "mixed", n=6, shapes=shapes, shuffle=False)
    vols = read_image(tmp_path / "mixed")
    assert vols[0].array.shape == (5, 24, 20)
    assert len(vols.report.skipped) == 1
    path, reason = vols.report.skipped[0]
    assert path.endswith("img0005.dcm") and "16x16" in reason and "differs" in reason


def test_ct_values_match_pydicom_modality_lut():
    for name in ("CT_small.dcm", "693_UNCR.dcm"):
        p = get_testdata_file(name)
        if p is None:
            continue
        ds = pydicom.dcmread(p)
        v = read_image(p)[0]
        np.testing.assert_array_equal(v.array, apply_modality_lut(ds.pixel_array, ds))
        assert v.metadata["units"] == "HU"


def test_enhanced_ct_per_frame_groups():
    p = _testfile("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(p)
    v = read_image(p)[0]
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    frames = ds.PerFrameFunctionalGroupsSequence
    pos = np.array([f.PlanePositionSequence[0].ImagePositionPatient for f in frames], float)
    order = [int(i) for i in np.argsort(pos @ normal)]
    assert v.metadata["frame_order"] == order
    arr = ds.pixel_array
    pvt = shared.PixelValueTransformationSequence[0]
    expect = arr[order].astype(np.float64) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    # shown in the display layout; on the source grid: the frames sorted along the normal
    np.testing.assert_array_equal(to_source_grid(v.array, v.metadata["orientation"]), expect)
    ps = [float(x) for x in shared.PixelMeasuresSequence[0].PixelSpacing]
    np.testing.assert_allclose(v.spacing, (abs(np.diff(pos @ normal)[0]), ps[0], ps[1]))
    src = v.metadata["orientation"]["source_affine"]
    np.testing.assert_allclose(src[:3, 3], pos[order[0]])
    for k in range(2):  # every source slice sits at its frame's position
        np.testing.assert_allclose(src[:3, 0] * k + src[:3, 3], pos[order[k]])
    np.testing.assert_allclose(src[:3, 2], iop[:3] * ps[1])
    # the displayed voxel at each index is the source voxel at the same LPS position
    disp = np.array(np.unravel_index(np.arange(0, v.array.size, 997), v.array.shape)).T
    lps = v.index_to_lps(disp)
    src_idx = np.rint((lps - src[:3, 3]) @ np.linalg.inv(src[:3, :3]).T).astype(int)
    np.testing.assert_array_equal(v.array[tuple(disp.T)], expect[tuple(src_idx.T)])
    assert v.window == (49.0, 102.0)


def test_enhanced_mr_multiframe():
    p = _testfile("emri_small.dcm")
    v = read_image(p)[0]
    ds = pydicom.dcmread(p)
    assert v.array.shape == (10, 64, 64) and v.modality == "MR"
    np.testing.assert_array_equal(v.array, ds.pixel_array)


def test_monochrome1_is_inverted():
    p = _testfile("RG1_UNCR.dcm")
    ds = pydicom.dcmread(p)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    v = read_image(p)[0]
    raw = apply_modality_lut(ds.pixel_array, ds).astype(np.int64)
    hi = 2 ** int(ds.BitsStored) - 1
    np.testing.assert_array_equal(v.array.astype(np.int64), hi - raw)
    c = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
    assert v.window[0] == pytest.approx(hi - c)


def test_rgb_and_palette():
    v = read_image(get_testdata_file("SC_rgb.dcm"))[0]
    assert v.rgb and v.array.shape == (100, 100, 3)
    p = get_testdata_file("OT-PAL-8-face.dcm")
    if p:
        v = read_image(p)[0]
        assert v.rgb and v.array.shape[-1] == 3


@pytest.mark.parametrize("name", ["rtstruct.dcm", "rtplan.dcm", "test-SR.dcm"])
def test_no_pixel_data_is_a_clear_error(name):
    p = get_testdata_file(name)
    with pytest.raises(ImageReadError) as ei:
        read_image(p)
    assert p in str(ei.value) and "no pixel data" in str(ei.value)


def test_dicomdir_is_refused_but_its_folder_loads(tmp_path):
    p = get_testdata_file("DICOMDIR")
    with pytest.raises(ImageReadError, match="DICOMDIR"):
        read_image(p)


def test_truncated_and_corrupt_files(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    data = open(src, "rb").read()
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ImageReadError) as ei:
        read_image(trunc)
    assert str(trunc) in str(ei.value) and "truncated" in ei.value.reason
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 300)
    with pytest.raises(ImageReadError) as ei:
        read_image(junk)
    assert str(junk) in str(ei.value)
    text = tmp_path / "notes.dcm"
    text.write_text("hello")
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        read_image(text)


def test_folder_with_bad_files_loads_good_ones(tmp_path):
    make_series(tmp_path / "s", n=4)
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01\x02")
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "s" / "rt.dcm")
    (tmp_path / "s" / "readme.txt").write_text("ignored")
    vols = read_image(tmp_path / "s")
    assert len(vols) == 1 and vols[0].array.shape[0] == 4
    bad = {p.split("/")[-1]: r for p, r in vols.report.skipped}
    assert set(bad) == {"broken.dcm", "rt.dcm"}
    assert "no pixel data" in bad["rt.dcm"]


def test_missing_decoder_names_the_packages(monkeypatch):
    p = get_testdata_file("JPEG2000.dcm")
    ds = pydicom.dcmread(p, stop_before_pixels=True)

    class _NoDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-openjpeg"]

    from pydicom import pixels as pxl

    monkeypatch.setattr(pxl, "get_decoder", lambda ts: _NoDecoder())
    with pytest.raises(MissingDecoderError) as ei:
        read_image(p)
    msg = str(ei.value)
    assert p in msg and ds.file_meta.TransferSyntaxUID.name in msg and "pylibjpeg" in msg


def test_real_missing_decoder_if_any():
    """Files whose decoder is really not installed here give MissingDecoderError, others load."""
    from pydicom.pixels import get_decoder

    p = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm") or get_testdata_file("JPEG-LL.dcm")
    ts = pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(ts).is_available:
        assert read_image(p)
    else:
        with pytest.raises(MissingDecoderError):
            read_image(p)


def test_list_of_files_and_duplicates(tmp_path):
    gt = make_series(tmp_path / "s", n=5)
    files = [str(f) for f in gt["files"]]
    v = read_image(files[:3])[0]
    assert v.array.shape[0] == 3
    shutil.copy(files[0], tmp_path / "s" / "dup.dcm")
    vols = read_image(tmp_path / "s")
    assert vols[0].array.shape[0] == 5
    assert any("duplicate" in r for _, r in vols.report.skipped)


def test_read_dicom_strict_mode_raises_first_problem(tmp_path):
    make_series(tmp_path / "s", n=2)
    bad = tmp_path / "s" / "zz.dcm"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="zz.dcm"):
        dcm.read_dicom(sorted(str(p) for p in (tmp_path / "s").iterdir()))
