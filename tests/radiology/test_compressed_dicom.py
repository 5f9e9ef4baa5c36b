"""Compressed DICOM decodes out of the box (pylibjpeg + libjpeg/openjpeg, pyjpegls).

Lossless codecs are compared bit for bit with the uncompressed copy of the same image that
pydicom / pydicom-data ship; JPEG lossless (no encoder exists to make a pair) is checked on a
real 512² CT: HU, air and soft tissue where they belong.
"""

import logging

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from training.io import read_image


def _read(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not found (pydicom-data not installed)")
    logging.disable(logging.WARNING)
    try:
        vols = read_image(path)
    finally:
        logging.disable(logging.NOTSET)
    assert len(vols) == 1
    return vols[0]


def test_jpeg_lossless_ct_loads_in_hu():
    vol = _read("bad_sequence.dcm")  # pydicom-data: 512² CT, JPEG Lossless SV1
    assert vol.modality == "CT"
    assert vol.array.shape == (512, 512)
    p5, p50, p95 = np.percentile(vol.array, [5, 50, 95])
    assert -1100 < p5 < -850  # air around the patient
    assert -200 < p50 < 150 and 100 < p95 < 400  # soft tissue, contrast, bone edge


def test_jpeg_lossless_8bit_and_nm_load():
    us = _read("JPGLosslessP14SV1_1s_1f_8b.dcm")
    assert us.array.shape == (768, 1024) and us.array.std() > 1
    nm = _read("JPEG-LL.dcm")
    assert nm.array.shape == (1024, 256) and nm.array.max() > 100


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # CT, JPEG 2000 lossless
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # MR 1024², JPEG 2000 lossless
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),  # multi-frame MR
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),  # JPEG lossless, RGB
    ],
)
def test_lossless_codecs_match_the_uncompressed_file(compressed, reference):
    a, b = _read(compressed), _read(reference)
    assert a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)


def test_jpeg_baseline_multiframe_colour_loads():
    vol = _read("color3d_jpeg_baseline.dcm")
    assert vol.array.shape == (120, 480, 640, 3) and vol.rgb
