"""Round trips that keep voxels, names, colours and geometry: DICOM-SEG and NIfTI + label table.

On the synthetic sample series, on series that lack Type 2 attributes, FrameOfReferenceUID or
SliceThickness, and on every CT / MR volume of pydicom's and pydicom-data's corpora that loads.
"""
from __future__ import annotations

import logging
import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from training.io import ImageWriteError, read_image, write_labels_dicom_seg, write_labels_nifti
from training.io.label_table import label_sidecar_path, read_itksnap_labels
from training.io.writers import FRAME_OF_REFERENCE_NOTE

NAMES = {1: "liver", 3: "kidney, left", 7: "lesion \"A\""}
COLORS = {1: (0.8, 0.1, 0.1), 3: (20, 200, 90), 7: (0.0, 0.45, 0.7, 1.0)}


def _rgb01(c):
    c = np.asarray(c, float)[:3]
    return c / 255.0 if c.max() > 1 else c


def _quiet_read(path):
    logging.disable(logging.WARNING)
    try:
        return read_image(path)
    finally:
        logging.disable(logging.NOTSET)


def _labels_for(vol):
    a = np.asarray(vol.array, float)
    lab = np.zeros(a.shape, np.uint8)
    lab[a > np.percentile(a, 55)] = 1
    lab[a > np.percentile(a, 85)] = 3
    lab[a > np.percentile(a, 97)] = 7
    return lab


def _check_reopened(back, lab, vol, names=NAMES, colors=COLORS, atol_rgb=2.5 / 255):
    assert back.kind == "labels"
    np.testing.assert_array_equal(back.array, lab)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    present = {int(v) for v in np.unique(lab) if v}
    assert {k: back.metadata["label_names"][k] for k in present} == {k: names[k] for k in present}
    got = back.metadata["label_colors"]
    for k in present:
        np.testing.assert_allclose(got[k][:3], _rgb01(colors[k]), atol=atol_rgb)


def _seg_roundtrip(tmp_path, vol, name="seg.dcm"):
    lab = _labels_for(vol)
    out = tmp_path / name
    write_labels_dicom_seg(out, lab, vol, segment_names=NAMES, colors=COLORS)
    back = _quiet_read(out)
    assert len(back) == 1
    _check_reopened(back[0], lab, vol)
    return out


@pytest.fixture(scope="module")
def synthetic_series(tmp_path_factory):
    from napari_vismae._sample_data import synthetic_ct_files

    folder, truth = synthetic_ct_files(tmp_path_factory.mktemp("sample"))
    return _quiet_read(folder)[0], truth


def test_seg_of_the_synthetic_sample_reopens_with_names_colours_geometry(tmp_path,
                                                                         synthetic_series):
    vol, truth = synthetic_series
    assert "PatientBirthDate" not in vol.metadata["dicom_headers"][0]  # the failure
    from training.data.synthetic import CLASSES

    names = {c["index"]: c["name"] for c in CLASSES if c["index"]}
    colors = {c["index"]: c["color"] for c in CLASSES if c["index"]}
    colors = {k: tuple(int(v[i:i + 2], 16) for i in (1, 3, 5)) for k, v in colors.items()}
    out = tmp_path / "truth.dcm"
    write_labels_dicom_seg(out, truth, vol, segment_names=names, colors=colors)
    ds = pydicom.dcmread(out)
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""  # Type 2: present, empty
    assert ds.FrameOfReferenceUID == vol.metadata["dicom_headers"][0].FrameOfReferenceUID
    assert "ContentDescription" not in ds or FRAME_OF_REFERENCE_NOTE not in ds.ContentDescription
    _check_reopened(_quiet_read(out)[0], truth.astype(np.uint8), vol, names, colors)
    assert "PatientBirthDate" not in vol.metadata["dicom_headers"][0]  # source untouched


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "bad_sequence.dcm"])
def test_seg_without_frame_of_reference_creates_one_and_says_so(tmp_path, name, caplog):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("pydicom-data not installed")
    vol = _quiet_read(path)[0]
    assert "FrameOfReferenceUID" not in vol.metadata["dicom_headers"][0]
    with caplog.at_level(logging.WARNING):
        out = _seg_roundtrip(tmp_path, vol)
    assert FRAME_OF_REFERENCE_NOTE in caplog.text
    ds = pydicom.dcmread(out)
    assert ds.ContentDescription == FRAME_OF_REFERENCE_NOTE
    uid = ds.FrameOfReferenceUID
    assert pydicom.uid.UID(uid).is_valid
    again = tmp_path / "again.dcm"
    write_labels_dicom_seg(again, _labels_for(vol), vol, segment_names=NAMES)
    assert pydicom.dcmread(again).FrameOfReferenceUID == uid  # one per series, not per save
    assert "FrameOfReferenceUID" not in vol.metadata["dicom_headers"][0]


def test_seg_of_a_ct_without_slice_thickness_reopens(tmp_path):
    # the "Sequence does not have the required attributes for a Pixel Measures Sequence"
    vol = _quiet_read(get_testdata_file("explicit_VR-UN.dcm"))[0]
    assert vol.array.shape == (512, 512)
    assert not vol.metadata["dicom_headers"][0].get("SliceThickness")
    _seg_roundtrip(tmp_path, vol)


def test_foreign_seg_without_slice_thickness_is_read(tmp_path):
    vol = _quiet_read(get_testdata_file("CT_small.dcm"))[0]
    out = _seg_roundtrip(tmp_path, vol)
    ds = pydicom.dcmread(out)
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    del pm.SliceThickness
    ds.save_as(out)
    back = _quiet_read(out)[0]
    np.testing.assert_array_equal(back.array, _labels_for(vol))


def test_multiframe_without_geometry_is_refused_clearly(tmp_path):
    vol = _quiet_read(get_testdata_file("emri_small.dcm"))[0]
    with pytest.raises(ImageWriteError, match="no patient geometry.*NIfTI"):
        write_labels_dicom_seg(tmp_path / "x.dcm", _labels_for(vol), vol, segment_names=NAMES)
    assert not list(tmp_path.iterdir())


def _corpus_ct_mr():
    from tests.io.test_corpus import corpus_files

    logging.disable(logging.WARNING)
    out = []
    try:
        for f in corpus_files():
            try:
                vols = read_image(f)
            except Exception:  # noqa: BLE001 - refused files are the corpus test's business
                continue
            out += [(f, v) for v in vols
                    if v.modality in ("CT", "MR") and not v.rgb and v.array.ndim <= 3]
    finally:
        logging.disable(logging.NOTSET)
    return out


@pytest.mark.slow
def test_seg_round_trip_on_every_ct_and_mr_of_the_corpora(tmp_path):
    done, refused = [], []
    for n, (f, vol) in enumerate(_corpus_ct_mr()):
        try:
            _seg_roundtrip(tmp_path, vol, f"{n}.dcm")
            done.append(os.path.basename(f))
        except ImageWriteError as e:
            assert "no patient geometry" in e.reason, (f, e.reason)
            refused.append(os.path.basename(f))
    print(f"\nSEG round trips: {len(done)} CT/MR volumes, refused (no geometry): {refused}")
    assert len(done) >= 45
    assert {"CT_small.dcm", "MR_small.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm",
            "eCT_Supplemental.dcm"} <= set(done)
    assert all(r.startswith("emri_small") for r in refused)


# --------------------------------------------------------------------- NIfTI + label table
def test_nifti_label_table_round_trip_from_dicom(tmp_path, synthetic_series):
    vol, truth = synthetic_series
    lab = _labels_for(vol)
    out = tmp_path / "pred.nii.gz"
    write_labels_nifti(out, lab, vol, segment_names=NAMES, colors=COLORS)
    side = tmp_path / "pred.label.txt"
    assert label_sidecar_path(out) == str(side) and side.is_file()
    text = side.read_text()
    assert text.startswith("################################################\n# ITK-SnAP Label")
    assert '    0     0    0    0     0.00  0  0    "Clear Label"' in text
    names, colors = read_itksnap_labels(side)
    assert names == {1: "liver", 3: "kidney, left", 7: "lesion 'A'"}  # " is not escapable
    back = _quiet_read(out)[0]
    expected_names = {**NAMES, 7: "lesion 'A'"}
    _check_reopened(back, lab, vol, expected_names, COLORS, atol_rgb=0.51 / 255)
    # a folder holding both reads the image only; the table is not reported as unreadable
    res = _quiet_read(tmp_path)
    assert len(res) == 1 and not res.report.skipped


def test_nifti_label_table_round_trip_from_nifti(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    aff = np.array([[-0.9, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(0, 100, (24, 20, 6)).astype(np.float32), aff), src)
    vol = _quiet_read(src)[0]
    lab = _labels_for(vol)
    out = tmp_path / "ct_seg.nii"
    write_labels_nifti(out, lab, vol, segment_names=NAMES, colors=COLORS)
    back = _quiet_read(out)[0]
    _check_reopened(back, lab, vol, {**NAMES, 7: "lesion 'A'"}, COLORS, atol_rgb=0.51 / 255)
    np.testing.assert_allclose(nib.load(out).affine, aff)


def test_nifti_without_names_writes_no_table_and_bad_table_is_a_warning(tmp_path):
    vol = _quiet_read(get_testdata_file("CT_small.dcm"))[0]
    out = tmp_path / "a.nii.gz"
    write_labels_nifti(out, _labels_for(vol), vol)
    assert not (tmp_path / "a.label.txt").exists()
    (tmp_path / "a.label.txt").write_text("1 255 0 zero 1 1 1 \"x\"\n")
    back = _quiet_read(out)[0]
    assert "label_names" not in back.metadata
    assert any("label table ignored" in w and "line 1" in w for w in back.metadata["warnings"])


def test_seg_colours_are_stored_as_cielab(tmp_path):
    vol = _quiet_read(get_testdata_file("CT_small.dcm"))[0]
    out = _seg_roundtrip(tmp_path, vol)
    seg = hd.seg.segread(out)
    lab = seg.SegmentSequence[0].RecommendedDisplayCIELabValue
    rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
    np.testing.assert_allclose(np.asarray(rgb) / 255, COLORS[1], atol=2 / 255)


def test_big_endian_seg_reads_like_its_little_endian_twin():
    a, b = (_quiet_read(get_testdata_file(n))[0] for n in ("liver.dcm", "liver_expb.dcm"))
    np.testing.assert_array_equal(a.array, b.array)
    assert b.metadata["label_names"] == {1: "Liver"}
    assert b.metadata["label_colors"] == a.metadata["label_colors"]


def test_big_endian_seg_with_ow_pixel_words(tmp_path):
    from pydicom.uid import ExplicitVRBigEndian

    vol = _quiet_read(get_testdata_file("CT_small.dcm"))[0]
    out = _seg_roundtrip(tmp_path, vol)
    ds = pydicom.dcmread(out)
    data = ds.PixelData + (b"\0" if len(ds.PixelData) % 2 else b"")
    ds.PixelData = np.frombuffer(data, "<u2").astype(">u2").tobytes()  # words as stored BE
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    be = tmp_path / "be.dcm"
    pydicom.dcmwrite(be, ds, little_endian=False, implicit_vr=False)
    assert pydicom.dcmread(be).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_array_equal(_quiet_read(be)[0].array, _labels_for(vol))


@pytest.mark.parametrize("name", [
    "RG1_UNCR.dcm",  # radiograph, no patient geometry
    "US1_UNCR.dcm",  # ultrasound
    "dicomdirtests/77654033/CR1/6154",  # CR with ImagerPixelSpacing only
    "OT-PAL-8-face.dcm",  # StudyTime '15:18:59' (not a DICOM TM)
    "JPEGLSNearLossless_08.dcm",  # no StudyInstanceUID
    "SC_jpeg_no_color_transform.dcm",  # no Modality
])
def test_seg_round_trip_beyond_ct_and_mr(tmp_path, name):
    path = get_testdata_file(os.path.basename(name))
    if name.startswith("dicomdirtests"):
        path = os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm")), name)
    if path is None:
        pytest.skip("pydicom-data not installed")
    vol = _quiet_read(path)[0]
    if vol.rgb:
        vol.array = vol.array.mean(-1)
    _seg_roundtrip(tmp_path, vol)


@pytest.mark.parametrize("name, reason", [
    ("rtdose.dcm", "RT Dose grid"),
    ("color-pl.dcm", "is retired"),
    ("OBXXXX1A_2frame.dcm", "no patient geometry"),
])
def test_seg_refusals_say_why(tmp_path, name, reason):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("pydicom-data not installed")
    vol = _quiet_read(path)[0]
    lab = np.zeros(vol.array.shape[:3] if not vol.rgb else vol.array.shape[:-1], np.uint8)
    lab[..., 1:3, 1:3] = 1
    with pytest.raises(ImageWriteError, match=reason) as e:
        write_labels_dicom_seg(tmp_path / "x.dcm", lab, vol)
    assert "NIfTI" in e.value.reason
