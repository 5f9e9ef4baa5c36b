"""Plugin fixtures: an isolated model store holding small models made by the tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vismae import _models
from training.data.preprocessing import Preprocessing
from training.models import build_model
from training.weights.checkpoint import save_checkpoint
from training.weights.store import ModelStore

CLASSES = [{"index": 0, "name": "background", "color": "#00000000"},
           {"index": 1, "name": "organ", "color": "#D55E00"},
           {"index": 2, "name": "bone", "color": "#F0E442"}]


@pytest.fixture
def tiny_store(tmp_path, monkeypatch):
    """A store with a random tiny segmentation and classification model (64 px input)."""
    monkeypatch.setenv("NAPARI_VISMAE_MODELS", str(tmp_path / "user"))
    torch.manual_seed(0)
    prep = Preprocessing(input_size=64, modality="CT").to_dict()
    save_checkpoint(build_model("segmentation", "tiny", num_classes=3, img_size=64),
                    tmp_path / "builtin" / "tiny-seg", classes=CLASSES, preprocessing=prep)
    save_checkpoint(build_model("classification", "tiny", num_classes=2, img_size=64),
                    tmp_path / "builtin" / "tiny-cls", preprocessing=prep,
                    classes=[{"index": 0, "name": "normal", "color": "#009E73"},
                             {"index": 1, "name": "lesion", "color": "#D55E00"}])
    store = ModelStore(builtin_dirs=[tmp_path / "builtin"])
    old = _models._store
    _models.set_store(store)
    yield store
    _models._store = old


@pytest.fixture
def ct_volume():
    rng = np.random.default_rng(0)
    return rng.normal(40, 200, (6, 64, 64)).astype(np.float32)


class Heartbeat:
    """A 50 ms QTimer on the GUI thread; ``max_stall`` is the longest time it was late by,
    i.e. how long the GUI thread could not process events."""

    def __init__(self, interval_ms: int = 50):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.gaps: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        import time

        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def __enter__(self):
        import time

        self._last = time.perf_counter()
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._tick()
        self._timer.stop()

    @property
    def max_stall(self) -> float:
        return max(0.0, max(self.gaps, default=0.0) - self.interval)


@pytest.fixture
def heartbeat():
    return Heartbeat


@pytest.fixture
def error_notifications():
    """Every napari notification of severity warning or worse shown during the test; the
    test fails at teardown on an error (read the list to assert on expected ones and
    clear it)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen: list = []

    def on_note(event):
        note = event.value if hasattr(event, "value") else event
        if note.severity >= NotificationSeverity.WARNING:
            seen.append(note)

    notification_manager.notification_ready.connect(on_note)
    yield seen
    notification_manager.notification_ready.disconnect(on_note)
    errors = [n for n in seen if n.severity >= NotificationSeverity.ERROR]
    assert not errors, "error notifications: " + "; ".join(str(n.message) for n in errors)


def wait_for_models(qtbot, widget, attr: str = "_model", timeout: int = 60_000):
    """Wait until ``widget``'s model list is filled (the engine loads in a worker thread)."""
    box = getattr(widget, attr)
    if hasattr(box.value, "__len__"):  # a multi-select: wait for its list
        qtbot.waitUntil(lambda: len(box.choices) > 0, timeout=timeout)
    else:
        qtbot.waitUntil(lambda: box.value is not None, timeout=timeout)


def click(button) -> None:
    """Click a magicgui PushButton the way a user does."""
    assert button.enabled, f"{button.text!r} is disabled"
    button.native.click()


def add_version(store_root, lineage: str, seed: int, num_classes: int = 3):
    """Write ``<user>/<lineage>/v000N`` (a new version with different weights) and make it
    active, as a fine-tune run does."""
    from training.weights.versions import VersionStore

    torch.manual_seed(seed)
    model = build_model("segmentation", "tiny", num_classes=num_classes, img_size=64)
    from training.weights.card import ModelCard

    card = ModelCard(name=lineage, task="segmentation", architecture=model.cfg.to_dict(),
                     num_classes=num_classes, classes=CLASSES[:num_classes],
                     preprocessing=Preprocessing(input_size=64, modality="CT").to_dict())
    entry = VersionStore(store_root).add_version(model, card, lineage)
    _models.events.models_changed.emit()
    return entry
