"""`napari-vismae demo --screenshot` waits for the segmentation itself: every screenshot
shows it (run several times, each in a fresh process, as a user would)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_vismae._models import BUILTIN_DIR

pytestmark = [pytest.mark.gui, pytest.mark.slow,
              pytest.mark.skipif(not (BUILTIN_DIR / "abdomen-organs").is_dir(),
                                 reason="built-in models not built")]
ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("VISMAE_DEMO_RUNS", "3"))  # 20 by hand: VISMAE_DEMO_RUNS=20


def segmented_pixels(png: Path) -> int:
    """Pixels tinted by the liver's orange (#D55E00 at 50 % over grey): red well above blue.
    The CT itself is grey (R = G = B) and napari's dark theme is grey-blue."""
    import imageio.v3 as iio

    rgb = iio.imread(png)[..., :3].astype(int)
    return int(((rgb[..., 0] - rgb[..., 2] > 80) & (rgb[..., 0] > 150)).sum())


def test_demo_screenshot_always_shows_the_segmentation(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "NAPARI_VISMAE_MODELS": str(tmp_path / "user"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    counts = []
    for k in range(RUNS):
        png = tmp_path / f"demo-{k}.png"
        out = subprocess.run([sys.executable, "-m", "napari_vismae", "demo", "--screenshot",
                              str(png), "--timeout", "240"], env=env, capture_output=True,
                             text=True, timeout=400)
        assert out.returncode == 0, (k, out.stdout[-2000:], out.stderr[-3000:])
        assert "segmented in" in out.stdout and png.is_file()
        counts.append(segmented_pixels(png))
    print("segmentation pixels per screenshot:", counts)
    assert min(counts) > 5000, counts


def test_segmented_pixels_sees_no_segmentation_on_plain_grey(tmp_path):
    import imageio.v3 as iio

    grey = np.full((100, 100, 3), 120, np.uint8)
    iio.imwrite(tmp_path / "g.png", grey)
    assert segmented_pixels(tmp_path / "g.png") == 0
