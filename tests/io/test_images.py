import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import data

from training.io import ImageReadError, read_image


def test_png_gray_and_rgb(tmp_path):
    cam = data.camera()
    iio.imwrite(tmp_path / "cam.png", cam)
    v = read_image(tmp_path / "cam.png")[0]
    assert not v.rgb and v.array.shape == cam.shape
    np.testing.assert_array_equal(v.array, cam)
    ast = data.astronaut()
    iio.imwrite(tmp_path / "ast.png", ast)
    v = read_image(tmp_path / "ast.png")[0]
    assert v.rgb and v.array.shape == ast.shape
    np.testing.assert_array_equal(v.array, ast)
    a16 = (np.arange(64 * 64, dtype=np.uint16) * 15).reshape(64, 64)
    iio.imwrite(tmp_path / "a16.png", a16)
    np.testing.assert_array_equal(read_image(tmp_path / "a16.png")[0].array, a16)


def test_jpeg_and_tiff(tmp_path):
    ast = data.astronaut()
    iio.imwrite(tmp_path / "a.jpg", ast)
    v = read_image(tmp_path / "a.jpg")[0]
    assert v.rgb and v.array.shape == ast.shape
    stack = np.random.default_rng(0).integers(0, 4000, (3, 32, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    v = read_image(tmp_path / "s.tif")[0]
    np.testing.assert_array_equal(v.array, stack)
    tifffile.imwrite(tmp_path / "g.tiff", stack[0])
    np.testing.assert_array_equal(read_image(tmp_path / "g.tiff")[0].array, stack[0])


def test_truncated_png(tmp_path):
    iio.imwrite(tmp_path / "ok.png", data.camera())
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(raw[:200])
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_missing_path():
    with pytest.raises(ImageReadError, match="not found"):
        read_image("/nonexistent/file.png")
