from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """24 varied 64x64 grayscale PNGs (rotated, scaled phantoms) and one corrupt file."""
    from skimage.data import shepp_logan_phantom
    from skimage.io import imsave
    from skimage.transform import resize, rotate

    root = tmp_path_factory.mktemp("images")
    base = resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)
    rng = np.random.default_rng(0)
    for i in range(24):
        img = rotate(base, rng.uniform(-40, 40)) * rng.uniform(0.5, 1.0)
        sub = root / f"study{i % 3}"
        sub.mkdir(exist_ok=True)
        imsave(sub / f"img{i:02d}.png", (img * 255).astype(np.uint8), check_contrast=False)
    (root / "study0" / "corrupt.png").write_bytes(b"\x89PNG truncated")
    return root


def run_pretrain(args: list[str], launcher: list[str] | None = None, check: bool = True,
                 timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    cmd = (launcher or [sys.executable]) + ["-m", "training.pretrain"] + args
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_losses(run: Path) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


# Small, fast, deterministic settings shared by the tests.
BASE = ["--model", "tiny", "--input-size", "64", "--num-workers", "0", "--log-every", "1",
        "--vis-every", "0", "--drop-path", "0", "--warmup-epochs", "1", "--lr", "2e-3"]
