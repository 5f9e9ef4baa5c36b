"""Running engine work in napari worker threads: model loading and inference, cancellable."""
from __future__ import annotations

import threading
from collections.abc import Callable

from training.weights.store import ModelEntry


class ModelCache:
    """Loaded models by checkpoint path and device, so a second run starts instantly."""

    def __init__(self):
        self._models: dict = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry, device):
        from training.weights.checkpoint import load_checkpoint

        key = (str(entry.path), str(device))
        with self._lock:
            if key not in self._models:
                model, card = load_checkpoint(entry.path, device=device)
                self._models[key] = (model, card)
            return self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def _work(cache: ModelCache, entry: ModelEntry, kind: str, data, kwargs: dict, device: str):
    """The worker's generator: load (cached), then run the engine's step generator."""
    from training.interactive.inference import classify_steps, pick_device, segment_steps

    dev = pick_device(device)
    model, card = cache.get(entry, dev)
    steps = (segment_steps if kind == "segment" else classify_steps)(model, card, data,
                                                                     device=dev, **kwargs)
    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            return stop.value
        yield progress  # napari checks for quit() here: Cancel stops between batches


def start_worker(cache: ModelCache, entry: ModelEntry, kind: str, data, kwargs: dict, device: str,
                 *, total: int, desc: str, on_progress: Callable, on_result: Callable,
                 on_error: Callable, on_aborted: Callable):
    """Start :func:`_work` in a napari thread worker with a progress bar in the activity dock."""
    from napari.qt.threading import create_worker

    worker = create_worker(_work, cache, entry, kind, data, kwargs, device,
                           _progress={"total": total + 1, "desc": desc})
    worker.yielded.connect(on_progress)
    worker.returned.connect(on_result)
    worker.errored.connect(on_error)
    worker.aborted.connect(on_aborted)
    worker.start()
    return worker
