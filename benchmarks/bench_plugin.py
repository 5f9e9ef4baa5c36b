"""The napari Segment widget end to end vs the bare engine, on the built-in model.

    xvfb-run -a python -m benchmarks.bench_plugin [--slices 1 300] [--size 512] [--rounds 3]

"widget" = from clicking Segment to the prediction written into napari (worker thread,
the engine, the Labels layer created -- or, with ``--update``, the diff written into the
existing layer as one undo step). "engine" = ``run(segment_steps(...))`` on the same
array with the same (cached) model, batch and device, in the same process: the same
preprocessing, batching, logits resizing and argmax, no GUI. The two are interleaved
round by round; ratio = widget / engine (targets: <= 1.2 for 300 x 512², <= 1.5 for
one slice). Also the peak memory (RSS above the baseline) of a 300-slice prediction.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, nargs="+", default=[1, 300])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=None, help="default: the widget's default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--update", action="store_true",
                   help="also time re-segmenting into the existing layer (undoable diff)")
    args = p.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

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
    while w._model.value is None:
        app.processEvents()
        time.sleep(0.01)
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

        def engine(vol=vol):
            return run(segment_steps(model, card, vol, modality="CT", window=(40.0, 400.0),
                                     batch_size=batch, device=device))

        def widget(keep=False):
            if not keep:  # a new prediction layer each time
                for ly in [ly for ly in viewer.layers if ly.name.startswith("abdomen-organs")]:
                    viewer.layers.remove(ly)
            before = w.last_result
            t0 = time.perf_counter()
            w._run.native.click()
            while w.last_result is before:
                app.processEvents()
                time.sleep(0.001)
            return time.perf_counter() - t0

        engine(), widget()  # warm-up
        te, tw, tu = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            engine()
            te.append(time.perf_counter() - t0)
            tw.append(widget())
            if args.update:
                tu.append(widget(keep=True))
        rec = {"name": f"plugin_segment_{n}x{args.size}sq", "batch": batch,
               "widget_s": round(statistics.median(tw), 3),
               "engine_s": round(statistics.median(te), 3),
               "ratio": round(statistics.median(tw) / statistics.median(te), 3),
               "ratio_meaning": "Segment widget end to end / bare engine, interleaved "
                                "(targets: <= 1.2 for a volume, <= 1.5 for one slice)"}
        if tu:
            rec["update_s"] = round(statistics.median(tu), 3)
            rec["update_ratio"] = round(statistics.median(tu) / statistics.median(te), 3)
        if n > 1:
            for ly in [ly for ly in viewer.layers if ly.name.startswith("abdomen-organs")]:
                viewer.layers.remove(ly)
            with PeakRSS() as mem_widget:
                widget()
            with PeakRSS() as mem_engine:
                engine()
            rec["peak_mb_widget"] = round(mem_widget.mb, 1)
            rec["peak_mb_engine"] = round(mem_engine.mb, 1)
            rec["labels_mb"] = round(vol.shape[0] * vol.shape[1] * vol.shape[2] / 2**20, 1)
        print(json.dumps(rec), flush=True)
        rec["env"] = environment(device)
        records.append(rec)
        viewer.layers.clear()
    viewer.close()
    print(f"appended to {write(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
