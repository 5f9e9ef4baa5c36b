"""Turn a tree of DICOM, NIfTI and 2-D images into pretraining shards.

    python -m training.prepare SRC OUT [--size 224] [--shard-size 2048] [--workers 8]

Every file below SRC is read with the project's readers (``training.io``);
volumes are cut into 2-D slices along their first axis; CT is windowed with each
file's own DICOM window (or ``--ct-window``), everything else scaled by robust
percentiles; slices are resized to ``--size`` and stored as uint8 in
``OUT/shard-NNNNN.npy`` (memory-mappable) with ``OUT/manifest.json`` listing the
shards, the files in each, counts per modality and the skipped files with the
reason. Interrupted? Run the same command again: finished shards are kept and
their files are not read twice.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from training.pretrain.data import MANIFEST, SHARD_FORMAT
from training.runtime.atomic import atomic_path, atomic_write_text

log = logging.getLogger("training.prepare")

IGNORED = (".txt", ".json", ".xml", ".md", ".csv", ".html", ".pdf", ".py", ".log", ".yaml",
           ".yml", ".zip", ".db", ".npy")


def list_sources(src: Path) -> list[str]:
    if src.is_file():
        return [str(src)]
    files = []
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and not n.lower().endswith(IGNORED)
                  and n.upper() != "DICOMDIR"]
    return files


def volume_to_slices(vol, size: int, ct_window: tuple[float, float] | None,
                     skip_blank: bool = True) -> np.ndarray:
    """A :class:`training.io.Volume` -> (n, size, size) uint8 slices in [0, 255]."""
    from skimage.transform import resize

    from training.io.windowing import (
        default_window,
        limits_to_window,
        robust_limits,
        window_to_unit,
    )

    arr = np.asarray(vol.array)
    if vol.rgb:
        arr = arr[..., :3].mean(-1)
    arr = arr.reshape(-1, *arr.shape[-2:])
    if vol.modality.upper() == "CT":
        center, width = ct_window or default_window("CT", vol.window)
    else:
        center, width = limits_to_window(*robust_limits(arr))
    out = np.empty((arr.shape[0], size, size), np.uint8)
    keep = np.ones(arr.shape[0], bool)
    for i, sl in enumerate(arr):
        unit = window_to_unit(sl, center, width)
        if unit.shape != (size, size):
            unit = resize(unit, (size, size), anti_aliasing=True, preserve_range=True)
        out[i] = np.round(np.clip(unit, 0, 1) * 255)
        keep[i] = not (skip_blank and out[i].max() == out[i].min())
    return out[keep]


def process_file(path: str, size: int, ct_window, skip_blank: bool):
    """-> (path, {modality: count}, slices or None, error or None). Runs in a worker."""
    from training.io import ImageReadError, read_image

    try:
        volumes = [v for v in read_image(path) if v.kind == "image"]
        if not volumes:
            return path, {}, None, "no image data (labels or non-image object)"
        parts, counts = [], Counter()
        for v in volumes:
            s = volume_to_slices(v, size, ct_window, skip_blank)
            parts.append(s)
            counts[v.modality.upper() or "OT"] += len(s)
        slices = np.concatenate(parts) if parts else None
        if slices is None or len(slices) == 0:
            return path, {}, None, "every slice is blank"
        return path, dict(counts), slices, None
    except ImageReadError as e:
        return path, {}, None, e.reason
    except Exception as e:  # a reader bug must not end a million-file job: report it
        return path, {}, None, f"{type(e).__name__}: {e}"


class ShardWriter:
    """Buffers whole files' slices; writes a shard (atomically) when it is full, and the
    manifest after each shard, so an interruption loses at most one shard of work."""

    def __init__(self, out: Path, size: int, shard_size: int):
        self.out, self.size, self.shard_size = out, size, shard_size
        out.mkdir(parents=True, exist_ok=True)
        path = out / MANIFEST
        if path.exists():
            self.manifest = json.loads(path.read_text())
            if self.manifest.get("format") != SHARD_FORMAT or self.manifest["image_size"] != size:
                raise SystemExit(f"{path}: existing shards are not {size}px {SHARD_FORMAT}; "
                                 "use another OUT folder")
        else:
            self.manifest = {"format": SHARD_FORMAT, "image_size": size, "shards": [],
                             "counts_per_modality": {}, "skipped": [], "total_images": 0}
        self._reset()

    def _reset(self):
        self.parts, self.sources, self.modalities, self.count, self.skips = [], [], Counter(), 0, []

    def done_sources(self) -> set[str]:
        done = {s for shard in self.manifest["shards"] for s in shard["sources"]}
        return done | {s["path"] for s in self.manifest["skipped"]}

    def add(self, path: str, counts: dict, slices, error) -> None:
        if error is not None:
            self.skips.append({"path": path, "reason": error})
        else:
            self.parts.append(slices)
            self.sources.append(path)
            self.modalities.update(counts)
            self.count += len(slices)
        if self.count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        m = self.manifest
        if self.count:
            name = f"shard-{len(m['shards']):05d}.npy"
            with atomic_path(self.out / name, suffix=".npy") as tmp:
                np.save(tmp, np.concatenate(self.parts))
            m["shards"].append({"file": name, "count": self.count, "sources": self.sources,
                                "modalities": dict(self.modalities)})
            totals = Counter(m["counts_per_modality"])
            totals.update(self.modalities)
            m["counts_per_modality"] = dict(totals)
            m["total_images"] += self.count
        m["skipped"] += self.skips
        atomic_write_text(self.out / MANIFEST, json.dumps(m, indent=1) + "\n")
        self._reset()


def prepare(src: Path, out: Path, size: int = 224, shard_size: int = 2048, workers: int = 1,
            ct_window=None, skip_blank: bool = True) -> dict:
    """Shard every readable image below ``src`` into ``out``; returns the manifest."""
    from tqdm.auto import tqdm

    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    writer = ShardWriter(out, size, shard_size)
    done = writer.done_sources()
    todo = [f for f in list_sources(src) if f not in done]
    if done:
        log.info("resuming: %d files already done, %d to go", len(done), len(todo))
    args = [(f, size, ct_window, skip_blank) for f in todo]
    bar = tqdm(total=len(todo), desc="prepare", unit="file", dynamic_ncols=True, disable=None)
    try:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                # map keeps the input order: shards are reproducible whatever the timing
                for result in pool.map(_process_star, args, chunksize=8):
                    writer.add(*result)
                    bar.update(1)
        else:
            for a in args:
                writer.add(*process_file(*a))
                bar.update(1)
    finally:
        writer.flush()  # a clean stop (Ctrl-C, error) keeps everything finished so far
        bar.close()
    return writer.manifest


def _process_star(a):
    return process_file(*a)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="file or folder tree of DICOM / NIfTI / 2-D images")
    p.add_argument("out", type=Path, help="output folder for shards and manifest.json")
    p.add_argument("--size", type=int, default=224, help="slice side in pixels (default: 224)")
    p.add_argument("--shard-size", type=int, default=2048, help="slices per shard (default: 2048)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="reader processes (default: all cores)")
    p.add_argument("--ct-window", default=None,
                   help="CT window for every file: a preset name (e.g. 'soft tissue', 'lung') or "
                        "CENTER,WIDTH; default: each file's DICOM header window")
    p.add_argument("--keep-blank", action="store_true", help="keep constant (blank) slices")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ct_window = None
    if args.ct_window:
        from training.io.windowing import CT_PRESETS

        if args.ct_window in CT_PRESETS:
            ct_window = CT_PRESETS[args.ct_window]
        else:
            try:
                ct_window = tuple(float(v) for v in args.ct_window.split(","))
                assert len(ct_window) == 2 and ct_window[1] > 0
            except (ValueError, AssertionError):
                p.error(f"--ct-window {args.ct_window!r}: use a preset ({', '.join(CT_PRESETS)}) "
                        "or CENTER,WIDTH with WIDTH > 0")
    try:
        m = prepare(args.src, args.out, args.size, args.shard_size, args.workers, ct_window,
                    not args.keep_blank)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    print(f"{m['total_images']} slices in {len(m['shards'])} shards; per modality: "
          f"{m['counts_per_modality']}; skipped {len(m['skipped'])} files (see {args.out / MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
