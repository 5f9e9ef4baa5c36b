"""Running engine work in napari worker threads: model loading and inference, cancellable.

Everything that imports torch happens inside the worker (the GUI thread never does).
Loaded models are cached for the whole session, keyed by checkpoint path, the weights'
modification time and the device, so a second run, from any widget, starts at once and a
rewritten checkpoint is reloaded.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _weights_stamp(path) -> tuple:
    p = Path(path)
    for f in (p / "model.safetensors", p):
        try:
            st = os.stat(f)
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    return (None, None)


class ModelCache:
    """Loaded models by (checkpoint path, weights mtime, device)."""

    def __init__(self, max_models: int = 4):
        self._models: dict = {}
        self._lock = threading.Lock()
        self.max_models = max_models
        self.loads = 0  # how many times a checkpoint was actually read (tests, benchmarks)

    def get(self, entry, device):
        from training.weights.checkpoint import load_checkpoint

        key = (str(Path(entry.path).resolve()), _weights_stamp(entry.path), str(device))
        with self._lock:
            if key not in self._models:
                # drop older stamps of the same path, then the oldest entries
                for k in [k for k in self._models if k[0] == key[0] and k[2] == key[2]]:
                    del self._models[k]
                while len(self._models) >= self.max_models:
                    del self._models[next(iter(self._models))]
                model, card = load_checkpoint(entry.path, device=device)
                model.eval()
                self._models[key] = (model, card)
                self.loads += 1
            return self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = ModelCache()  # the session's cache, shared by every widget


def _work(cache: ModelCache, entry, kind: str, data, kwargs: dict, device: str,
          post: Callable[[Any], Any] | None = None):
    """The worker's generator: load (cached), run the engine's step generator, then
    ``post(result)`` (still off the GUI thread)."""
    from training.interactive.inference import classify_steps, pick_device, segment_steps

    dev = pick_device(device)
    model, card = cache.get(entry, dev)
    steps = (segment_steps if kind == "segment" else classify_steps)(model, card, data,
                                                                     device=dev, **kwargs)
    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            result = stop.value
            break
        yield progress  # napari checks for quit() here: Cancel stops between batches
    return post(result) if post is not None else result


def start_worker(cache: ModelCache | None, entry, kind: str, data, kwargs: dict, device: str,
                 *, total: int, desc: str, on_progress: Callable, on_result: Callable,
                 on_error: Callable, on_aborted: Callable,
                 post: Callable[[Any], Any] | None = None, activity: bool = True):
    """Start :func:`_work` in a napari thread worker with a progress bar in the activity dock
    (``activity=False``: none, for runs too short to follow there)."""
    from napari.qt.threading import create_worker

    worker = create_worker(_work, cache or MODELS, entry, kind, data, kwargs, device, post,
                           _progress={"total": total + 1, "desc": desc} if activity else None)
    worker.yielded.connect(on_progress)
    worker.returned.connect(on_result)
    worker.errored.connect(on_error)
    worker.aborted.connect(on_aborted)
    worker.start()
    return worker
