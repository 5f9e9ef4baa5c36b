"""Issue 13, readers under attack: declared sizes checked before allocating, only regular
files read, geometry validated, odd value types refused with ImageReadError (never raw)."""
from __future__ import annotations

import gzip
import os
import threading
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from training.io import ImageReadError, read_image
from training.io.limits import set_max_image_bytes

from .factory import make_series


def _testfile(name):
    p = get_testdata_file(name)
    if p is None:
        pytest.skip(f"{name} not available")
    return p


def _edited(src, dst, **attrs):
    ds = pydicom.dcmread(src)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(dst)
    return str(dst)


def test_a_million_declared_frames_are_refused_at_once(tmp_path):
    """Before: NumberOfFrames = 10**6 in a 39 KB file took 31 s and 600 MB to refuse."""
    p = _edited(_testfile("CT_small.dcm"), tmp_path / "f.dcm", NumberOfFrames=10**6)
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError) as info:
        read_image(p)
    assert time.perf_counter() - t0 < 3
    msg = str(info.value)
    assert "f.dcm" in msg and "1000000 frame" in msg and "holds only" in msg


def test_compressed_file_declaring_huge_pixels_is_refused(tmp_path):
    """Before: a 7.8 KB RLE file declaring 65535² pixels asked for 8 GiB."""
    p = _edited(_testfile("MR_small_RLE.dcm"), tmp_path / "rle.dcm", Rows=65535, Columns=65535)
    with pytest.raises(ImageReadError, match=r"65535 x 65535.*ratio above") as info:
        read_image(p)
    assert "rle.dcm" in str(info.value)


def test_ceiling_is_configurable_and_names_the_numbers(tmp_path):
    p = _testfile("CT_small.dcm")
    set_max_image_bytes(10_000)
    try:
        with pytest.raises(ImageReadError, match=r"more than the limit of 9\.8 KiB"):
            read_image(p)
    finally:
        set_max_image_bytes(None)
    assert read_image(p)[0].array.shape == (128, 128)


def _with_timeout(fn, seconds=10):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the reader hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_fifo_devices_and_outside_links_in_a_folder_are_skipped(tmp_path):
    """Before: a FIFO or a link to /dev/zero in a DICOM folder blocked forever."""
    make_series(tmp_path / "s", n=4)
    os.mkfifo(tmp_path / "s" / "pipe")
    os.symlink("/dev/zero", tmp_path / "s" / "zero")
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"secret")
    os.symlink(outside, tmp_path / "s" / "link")
    vols = _with_timeout(lambda: read_image(tmp_path / "s"))
    assert vols[0].array.shape[0] == 4
    reasons = dict(vols.report.skipped)
    assert "FIFO" in reasons[str(tmp_path / "s" / "pipe")]
    assert "outside the folder" in reasons[str(tmp_path / "s" / "zero")]
    assert "outside the folder" in reasons[str(tmp_path / "s" / "link")]
    with pytest.raises(ImageReadError, match="FIFO"):
        _with_timeout(lambda: read_image(tmp_path / "s" / "pipe"))
    from training.io.dicom import looks_like_dicom_file, read_dicom
    assert _with_timeout(lambda: looks_like_dicom_file(tmp_path / "s" / "pipe")) is False
    with pytest.raises(ImageReadError, match="FIFO"):
        _with_timeout(lambda: read_dicom([str(tmp_path / "s" / "pipe")]))


def _nifti_header_only(path, shape, dtype=np.int16, gz=True):
    """A NIfTI whose header declares ``shape`` but holds almost no data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(np.eye(4), 1)
    raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def test_nifti_gz_declaring_gigabytes_is_refused_before_decompressing(tmp_path):
    """Before: a 4 MB .nii.gz expanded to ~9 GB."""
    p = _nifti_header_only(tmp_path / "bomb.nii.gz", (2048, 2048, 512))  # 4 GiB declared
    with pytest.raises(ImageReadError) as info:
        read_image(p)
    assert "bomb.nii.gz" in str(info.value) and "2048 x 2048 x 512" in str(info.value)
    set_max_image_bytes(64 << 30)  # even under a high ceiling, gzip cannot expand that much
    try:
        with pytest.raises(ImageReadError, match="ratio above 1032:1"):
            read_image(p)
    finally:
        set_max_image_bytes(None)
    p = _nifti_header_only(tmp_path / "short.nii", (256, 256, 64), gz=False)
    with pytest.raises(ImageReadError, match="holds only"):
        read_image(p)


def _nifti(path, data, affine=None, **hdr_fields):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for k, v in hdr_fields.items():
        img.header[k] = v
    nib.save(img, path)
    return path


@pytest.mark.parametrize("kind", ["complex64", "rgb24"])
def test_nifti_complex_and_rgb_are_refused_not_raised(tmp_path, kind):
    """Before: the napari reader raised raw tracebacks for complex or RGB24 NIfTI."""
    if kind == "complex64":
        data = (np.ones((4, 4, 2)) + 1j).astype(np.complex64)
    else:
        data = np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    p = _nifti(tmp_path / f"{kind}.nii", data)
    with pytest.raises(ImageReadError, match="complex|RGB") as info:
        read_image(p)
    assert f"{kind}.nii" in str(info.value)


def test_complex_tiff_is_refused(tmp_path):
    import tifffile
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, (np.ones((8, 8)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(ImageReadError, match="complex"):
        read_image(p)


@pytest.mark.parametrize("bad", ["nan", "zero"])
def test_nifti_nan_or_zero_sform_loads_with_a_warning(tmp_path, bad):
    """Before: a NaN or all-zero sform raised a raw LinAlgError / ValueError."""
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    affine = np.full((4, 4), np.nan) if bad == "nan" else np.zeros((4, 4))
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, 1)
    img.header.set_qform(None, 0)
    img.header["pixdim"][1:4] = (2.0, 3.0, 4.0)
    nib.save(img, tmp_path / "s.nii")
    vols = read_image(tmp_path / "s.nii")
    assert vols[0].array.shape == (3, 5, 4)
    assert np.all(np.isfinite(vols[0].affine))
    assert any("affine is not usable" in w for w in vols.report.warnings)


def _set_orientation(folder, values):
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [str(v) for v in values]
        ds.save_as(f)


def test_orientation_of_length_two_is_normalised_with_a_warning(tmp_path):
    """Before: a DICOM orientation vector of length 2 doubled the spacing silently."""
    make_series(tmp_path / "s", n=5, spacing=2.5)
    _set_orientation(tmp_path / "s", [2, 0, 0, 0, 2, 0])
    vols = read_image(tmp_path / "s")
    np.testing.assert_allclose(vols[0].spacing, (2.5, 0.8, 0.7))
    assert any("lengths 2 and 2, not 1" in w for w in vols.report.warnings)


def test_zero_orientation_is_ignored_with_a_warning(tmp_path):
    """Before: an all-zero orientation gave zero spacing, no warning."""
    make_series(tmp_path / "s", n=5, spacing=2.5)
    _set_orientation(tmp_path / "s", [0, 0, 0, 0, 0, 0])
    vols = read_image(tmp_path / "s")
    assert np.all(np.asarray(vols[0].spacing) > 0)
    assert any("zero or parallel" in w for w in vols.report.warnings)


@pytest.mark.parametrize("slope", ["0", "nan"])
def test_zero_or_nan_rescale_slope_is_refused(tmp_path, slope):
    """Before: RescaleSlope = 0 gave a constant image without a warning."""
    p = _edited(_testfile("CT_small.dcm"), tmp_path / "s.dcm", RescaleSlope=slope)
    with pytest.raises(ImageReadError, match="RescaleSlope") as info:
        read_image(p)
    assert "s.dcm" in str(info.value)


def test_a_series_of_small_files_is_held_to_the_ceiling_too(tmp_path):
    make_series(tmp_path / "s", n=8, rows=24, cols=20)  # 960 bytes a slice, 7680 stacked
    set_max_image_bytes(5000)
    try:
        with pytest.raises(ImageReadError, match=r"the series \(8 slices\).*limit"):
            read_image(tmp_path / "s")
    finally:
        set_max_image_bytes(None)


def test_float_label_nifti_is_rounded_not_truncated(tmp_path):
    """Before: a label map stored scaled (1.9999999 for 2) became 1 when cast to integers."""
    lab = np.zeros((6, 5, 4), np.int16)
    lab[2:4, 1:3, 1:3] = 2
    img = nib.Nifti1Image(lab, np.eye(4))
    img.header.set_intent("label")
    img.header.set_slope_inter(0.9999999, 0.0)  # stored 2 reads back as 1.9999998
    nib.save(img, tmp_path / "seg.nii")
    v = read_image(tmp_path / "seg.nii")[0]
    assert v.kind == "labels" and v.array.dtype.kind in "iu"
    assert set(np.unique(v.array)) == {0, 2}
