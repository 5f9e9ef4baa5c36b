"""The napari Segment widget end to end vs the bare engine, on the built-in model.

    xvfb-run -a python -m benchmarks.bench_plugin [--slices 1 300] [--size 512] [--rounds 5]

Timed, interleaved round by round in one process (the order flips every round):

* "engine": ``run(segment_steps(...))`` on the same array with the same (cached) model,
  batch and device: the same preprocessing, batching, logits resizing and argmax, no GUI;
* "widget, layer reused" (the steady state: the model cached, the image's prediction
  layer already there): from clicking the real Segment button to the prediction written
  into that layer as one undo step. The layer is emptied before each such click (outside
  the timing) so that a real diff -- every foreground voxel -- is written back;
* "widget, new layer" (the first run on an image): the same with no prediction layer, so
  napari builds one;
* "napari add_labels": napari's own cost of adding a Labels layer of that shape (its
  vispy visual, the labels overlays and the layer controls), no plugin code: the floor
  that a new layer adds to the first run whatever the plugin does.

The GUI thread waits in Qt's event loop (``WaitForMoreEvents``), as in a running napari,
not in a polling loop that would compete with the worker for the GIL. Ratios = widget /
engine, median over rounds of the paired per-round ratios, with their spread; wall clock
and CPU seconds of the whole process (all threads; other jobs on a shared CPU barely
change it). Targets: <= 1.5 for one slice with the model cached, <= 1.2 for 300 x 512².
Also the peak memory (RSS above the baseline) of a 300-slice prediction.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import numpy as np

from .common import environment, write


class PeakRSS:
    """Peak resident memory above the value at entry, sampled every 5 ms."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _wait(app, done, timeout: float = 900.0) -> None:
    """Run Qt's event loop until ``done()``; sleeps in Qt between events (no polling)."""
    from qtpy.QtCore import QEventLoop, QTimer

    tick = QTimer()  # wakes the loop now and then to re-check the deadline
    tick.start(50)
    t_end = time.perf_counter() + timeout
    try:
        while not done():
            if time.perf_counter() > t_end:
                raise TimeoutError("the Segment widget did not finish")
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    finally:
        tick.stop()


def _timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of the whole process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _summary(raw: dict, key: str, base: str = "engine") -> dict:
    pairs = [a / b for a, b in zip(raw[key], raw[base], strict=True)]
    return {"ratio": round(statistics.median(pairs), 3),
            "spread": [round(min(pairs), 3), round(max(pairs), 3)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, nargs="+", default=[1, 300])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=None, help="default: the widget's default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (x4 for one slice)")
    args = p.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_vismae import _layers
    from napari_vismae._models import list_models
    from napari_vismae._segment_widget import DEFAULT_BATCH
    from napari_vismae._worker import MODELS
    from training.interactive.inference import pick_device, run, segment_steps

    batch = args.batch or DEFAULT_BATCH
    entry = next(e for e in list_models("segmentation") if e.name == "abdomen-organs")
    device = pick_device(args.device)
    model, card = MODELS.get(entry, device)  # the session cache the widget uses too
    viewer = napari.Viewer(show=False)
    _, w = viewer.window.add_plugin_dock_widget("napari-vismae", "Segment")
    app = QApplication.instance()
    _wait(app, lambda: w._model.value is not None)
    w._model.value = next(e for e in w._model.choices if e.path == entry.path)
    w._batch.value = batch
    w._device.value = args.device
    records = []
    rng = np.random.default_rng(0)
    for n in args.slices:
        vol = rng.normal(40, 200, (n, args.size, args.size)).astype(np.float32)
        vol = vol[0] if n == 1 else vol
        image = viewer.add_image(vol, name=f"ct{n}", metadata={"modality": "CT",
                                                                "window": (40.0, 400.0)})
        w._image.value = image

        def predictions():
            return [ly for ly in viewer.layers if ly.name.startswith("abdomen-organs")]

        def engine(vol=vol):
            return run(segment_steps(model, card, vol, modality="CT", window=(40.0, 400.0),
                                     batch_size=batch, device=device))

        def click():
            before = w.last_result
            w._run.native.click()
            _wait(app, lambda: w.last_result is not before)

        def new_layer():  # the first run on this image
            for ly in predictions():
                viewer.layers.remove(ly)
            return _timed(click)

        def reused_layer():  # the steady state: empty the layer (as a model write, so it
            (layer,) = predictions()  # is no user correction), then re-segment into it
            _layers.MODEL_WRITES.add(id(layer))
            try:
                layer.data = np.zeros_like(layer.data)
            finally:
                _layers.MODEL_WRITES.discard(id(layer))
            app.processEvents()
            t = _timed(click)
            assert w.last_layer is layer, "the prediction layer was not reused"
            return t

        def add_labels(shape=vol.shape):
            t0, c0 = time.perf_counter(), time.process_time()
            ly = viewer.add_labels(np.zeros(shape, np.uint8), name="napari floor")
            t = time.perf_counter() - t0, time.process_time() - c0
            viewer.layers.remove(ly)
            return t

        fns = {"engine": lambda: _timed(engine), "new_layer": new_layer,
               "reused_layer": reused_layer, "napari_add_labels": add_labels}
        engine(), new_layer(), reused_layer(), add_labels()  # warm-up
        wall = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        names = list(fns)
        rounds = args.rounds * (4 if n == 1 else 1)  # one slice: cheap rounds, noisy timings
        for r in range(rounds):
            for k in (names if r % 2 == 0 else names[::-1]):
                if k == "reused_layer" and not predictions():
                    new_layer()
                t, c = fns[k]()
                wall[k].append(t)
                cpu[k].append(c)
        med = {k: round(statistics.median(v), 4) for k, v in wall.items()}
        rec = {"name": f"plugin_segment_{n}x{args.size}sq", "batch": batch,
               "engine_s": med["engine"], "widget_reused_layer_s": med["reused_layer"],
               "widget_new_layer_s": med["new_layer"],
               "napari_add_labels_s": med["napari_add_labels"],
               "ratio": _summary(wall, "reused_layer")["ratio"],
               "ratio_spread": _summary(wall, "reused_layer")["spread"],
               "ratio_cpu": _summary(cpu, "reused_layer")["ratio"],
               "ratio_new_layer": _summary(wall, "new_layer")["ratio"],
               "ratio_new_layer_spread": _summary(wall, "new_layer")["spread"],
               "ratio_new_layer_cpu": _summary(cpu, "new_layer")["ratio"],
               "ratio_new_layer_minus_napari_floor": round(statistics.median(
                   (a - f) / e for a, f, e in zip(wall["new_layer"], wall["napari_add_labels"],
                                                  wall["engine"], strict=True)), 3),
               "rounds": rounds, "load_avg_1min": round(os.getloadavg()[0], 2),
               "ratio_meaning": "Segment widget end to end / bare engine, interleaved, median "
                                "of per-round pairs: 'ratio' with the model cached and the "
                                "prediction layer reused (a full diff written back, one undo "
                                "step); 'ratio_new_layer' on the first run (napari builds the "
                                "layer: napari_add_labels_s of it is napari's own floor). "
                                "Targets: <= 1.5 one slice, <= 1.2 for a volume"}
        if n > 1:
            for ly in predictions():
                viewer.layers.remove(ly)
            with PeakRSS() as mem_widget:
                click()
            with PeakRSS() as mem_engine:
                engine()
            rec["peak_mb_widget"] = round(mem_widget.mb, 1)
            rec["peak_mb_engine"] = round(mem_engine.mb, 1)
            rec["labels_mb"] = round(vol.shape[0] * vol.shape[1] * vol.shape[2] / 2**20, 1)
        print(json.dumps(rec), flush=True)
        rec["env"] = environment(device)
        rec["time"] = time.time()
        records.append(rec)
        viewer.layers.clear()
    viewer.close()
    print(f"appended to {write(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
