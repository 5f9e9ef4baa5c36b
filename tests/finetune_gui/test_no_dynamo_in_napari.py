"""End to end, in a fresh process with a real napari window (Mesa OpenGL under Xvfb): open
the Fine-tune widget, fine-tune, get the result - and napari's process never imported
torch._dynamo or triton (whose LLVM segfaults beside Mesa's)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import shutil, sys, tempfile, time
from pathlib import Path
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from training.data.synthetic import make_volume
from training.weights.store import ModelStore
from napari_vismae import _models, _tracking
from napari_vismae.finetune import FinetuneWidget

tmp = Path(tempfile.mkdtemp())
shutil.copytree(sys.argv[1], tmp / "builtin" / "weak-tiny-seg")
_models.set_store(ModelStore(builtin_dirs=[tmp / "builtin"], user_dir=tmp / "user"))
viewer = napari.Viewer()
vol, truth = make_volume(3, (12, 64, 64))
viewer.add_image(vol, name="ct", metadata={"modality": "CT"})
pred = viewer.add_labels(np.zeros(vol.shape, np.uint8), name="pred", metadata={
    "vismae": {"role": "prediction", "source_image": "ct"}})
_tracking.track(pred)
for z in (2, 5, 9):
    idx = np.nonzero(truth[z])
    with pred.block_history():
        pred.data_setitem((np.full(idx[0].shape, z), *idx), truth[z][idx])
w = FinetuneWidget(viewer)
viewer.window.add_dock_widget(w)
w._length.value = 2
w._run.native.click()
deadline = time.monotonic() + 240
while w.last_result is None and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.02)
assert w.last_result is not None and w.last_result["entry"], w._status.value
leaked = [m for m in ("torch._dynamo", "triton") if m in sys.modules]
assert not leaked, leaked
viewer.close()
print("OK", w.last_result["status"])
"""


def test_napari_process_never_imports_dynamo_or_triton():
    from .conftest import WEAK_BASE

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(WEAK_BASE)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "OK" in out.stdout
