"""The napari Segment widget end to end vs the bare model call, on the built-in model.

    xvfb-run -a python -m benchmarks.bench_plugin [--slices 300] [--size 512]

"widget" = from pressing Segment to the Labels layer written (preprocessing, worker
thread, batching, resizing back, undoable write). "bare" = the model's forward
on already-preprocessed input batches of the same count. The plugin's overhead is
widget / bare - 1 (target <= 20%).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from .common import environment, write


def bare_model_seconds(model, card, n: int, batch: int, device) -> float:
    s = card.prep.input_size
    x = torch.rand(batch, 1, s, s, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        t = time.perf_counter()
        for i in range(0, n, batch):
            model(x[: min(batch, n - i)])
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t


def widget_seconds(volume: np.ndarray, batch: int, device: str) -> tuple[float, object]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_vismae._segment_widget import SegmentWidget

    viewer = napari.Viewer(show=False)
    layer = viewer.add_image(volume, name="ct", metadata={"modality": "CT", "window": (40, 400)})
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = layer
    w._model.value = next(e for e in w._model.choices if e.name == "abdomen-organs")
    w._batch.value = batch
    w._device.value = device
    app = QApplication.instance()
    t = time.perf_counter()
    w.run()
    while w.last_result is None:
        app.processEvents()
        if w.worker is not None and not w.worker.is_running and w.last_result is None:
            app.processEvents()
        time.sleep(0.002)
    dt = time.perf_counter() - t
    viewer.close()
    return dt, w.last_result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, nargs="+", default=[1, 300])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from napari_vismae._models import get_store
    from training.weights.checkpoint import load_checkpoint

    entry = next(e for e in get_store().list("segmentation") if e.name == "abdomen-organs")
    device = torch.device(args.device)
    model, card = load_checkpoint(entry.path, device=device)
    records = []
    rng = np.random.default_rng(0)
    for n in args.slices:
        vol = rng.normal(40, 200, (n, args.size, args.size)).astype(np.float32)
        vol = vol[0] if n == 1 else vol
        widget_seconds(vol if n == 1 else vol[:2], args.batch, args.device)  # warm-up
        bare = bare_model_seconds(model, card, n, args.batch, device)
        wid, _ = widget_seconds(vol, args.batch, args.device)
        bare2 = bare_model_seconds(model, card, n, args.batch, device)
        bare = min(bare, bare2)
        r = {"name": f"plugin_segment_{n}x{args.size}sq", "widget_s": round(wid, 3),
             "bare_model_s": round(bare, 3), "ratio": round(wid / bare, 3),
             "ratio_meaning": "widget end-to-end / bare model forward (target <= 1.2)",
             "env": environment(device)}
        print(json.dumps({k: v for k, v in r.items() if k != "env"}), flush=True)
        records.append(r)
    print(f"appended to {write(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
