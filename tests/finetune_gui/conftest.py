"""Fixtures for the correct -> fine-tune tests: a weak base model and a phantom study."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_vismae import _models
from training.weights.store import ModelStore

WEAK_BASE = Path(__file__).resolve().parent / "data" / "weak-tiny-seg"
KIDNEY = 3
CORRECTED = (2, 5, 9)  # the slices the tests "paint" (with ground truth)


@pytest.fixture
def study():
    """A 12-slice 64-px phantom CT volume (HU) and its ground-truth labels (5 classes)."""
    from training.data.synthetic import make_volume
    vol, lab = make_volume(3, (12, 64, 64))
    return vol, lab


@pytest.fixture
def ft_store(tmp_path, monkeypatch):
    """An isolated store: the weak base model (never saw a kidney) as a built-in model and an
    empty user model folder (where versions go)."""
    if not WEAK_BASE.is_dir():
        pytest.skip("run python -m tests.finetune_gui.make_weak_base first")
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    shutil.copytree(WEAK_BASE, tmp_path / "builtin" / WEAK_BASE.name)
    store = ModelStore(builtin_dirs=[tmp_path / "builtin"], user_dir=tmp_path / "user")
    old = _models._store
    _models.set_store(store)
    yield store
    _models._store = old


def pooled_dice(model, card, image, labels, slices, cls=None) -> float:
    """Pooled foreground Dice of ``model`` on ``slices`` (one class, or the mean over the
    foreground classes present)."""
    from training.interactive.inference import run, segment_steps
    res = run(segment_steps(model, card, image, slices=list(slices), device="cpu"))
    pred, gt = res.labels[list(slices)], labels[list(slices)]
    classes = [cls] if cls is not None else [c for c in range(1, card.num_classes)
                                              if (gt == c).any()]
    out = []
    for c in classes:
        p, g = pred == c, gt == c
        out.append(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))
    return float(np.mean(out))


@pytest.fixture
def cls_model(ft_store):
    """A random tiny 2-class classifier added to the store's built-in folder."""
    import torch

    from training.data.preprocessing import Preprocessing
    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint
    torch.manual_seed(0)
    path = ft_store.builtin_dirs[0] / "tiny-cls"
    save_checkpoint(build_model("classification", "tiny", num_classes=2, img_size=64), path,
                    preprocessing=Preprocessing(input_size=64, modality="CT").to_dict(),
                    classes=[{"index": 0, "name": "normal", "color": "#009E73"},
                             {"index": 1, "name": "lesion", "color": "#D55E00"}])
    _models.events.models_changed.emit()
    return next(e for e in ft_store.list() if e.name == "tiny-cls")


@pytest.fixture
def notes():
    """Every napari notification shown during the test: [(severity, message)]. The test
    fails at the end on an error notification it did not expect (``notes.expect_errors``)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    class Notes(list):
        expect_errors = 0

        def errors(self):
            return [m for s, m in self if s == NotificationSeverity.ERROR]

        def warnings(self):
            return [m for s, m in self if s == NotificationSeverity.WARNING]

    got = Notes()

    def record(n):
        got.append((n.severity, n.message))

    notification_manager.notification_ready.connect(record)
    yield got
    notification_manager.notification_ready.disconnect(record)
    assert len(got.errors()) == got.expect_errors, got.errors()


def _runqueue_wait() -> float:
    """Seconds this thread has waited, runnable, for a CPU (Linux schedstat), else 0."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Heartbeat:
    """A 50 ms QTimer on the GUI thread. ``gaps[step]``: the longest time between two ticks
    while ``step`` ran, beyond the 50 ms period, *minus the time the GUI thread sat ready
    but without a CPU* (other processes on a shared CI machine; Linux schedstat) - i.e. the
    time the GUI thread was busy or blocked: a stall of ours. ``wall[step]``: the same
    without that correction."""

    def __init__(self):
        import time

        from qtpy.QtCore import QTimer

        self._now = time.perf_counter
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.step = None
        self.gaps: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.timer.start()

    def _tick(self):
        t, q = self._now(), _runqueue_wait()
        if self.last is not None and self.step is not None:
            wall = t - self.last[0] - 0.05
            own = wall - (q - self.last[1])
            self.wall[self.step] = max(self.wall.get(self.step, 0.0), wall)
            self.gaps[self.step] = max(self.gaps.get(self.step, 0.0), own)
        self.last = (t, q)

    def begin(self, step: str, qtbot) -> None:
        qtbot.wait(120)  # settle: the previous step's last tick
        self.step = step
        self.last = (self._now(), _runqueue_wait())

    def end(self, qtbot) -> None:
        qtbot.wait(120)  # a tick after the step's synchronous part
        self.step = None

    def report(self) -> str:
        return ", ".join(f"{k}: {self.gaps[k]:.3f} s ({self.wall[k]:.3f} s wall)"
                         for k in self.gaps)

    def stop(self):
        self.timer.stop()
