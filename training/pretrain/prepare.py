"""Turn a tree of DICOM, NIfTI and 2-D images into pretraining shards.

    python -m training.prepare SRC OUT [--size 224] [--shard-size 2048] [--workers 8]

Every file below SRC is read with the project's readers (``training.io``);
volumes are cut into 2-D slices along their first axis and preprocessed exactly as
inference does (``training.data.preprocessing``): CT through one HU window
(``--ct-window``, default 40,400; ``header`` = each file's own), everything else
through percentiles per slice or per volume; resized to ``--size`` and stored as
uint8 in ``OUT/shard-NNNNN.npy`` (memory-mappable). ``OUT/manifest.json`` lists the
shards, the files in each, counts per modality, the skipped files with the reason
and the preprocessing, which pretraining copies into its model card.
Interrupted? Run the same command again: finished shards are kept and their files
are not read twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from training.data.preprocessing import DEFAULT_CT_WINDOW, Preprocessing, grey, unit_slices
from training.pretrain.data import MANIFEST, SHARD_FORMAT
from training.runtime.atomic import atomic_path, atomic_write_text
from training.runtime.progress import Progress
from training.runtime.threads import configure_threads

log = logging.getLogger("training.prepare")

IGNORED = (".txt", ".json", ".xml", ".md", ".csv", ".html", ".pdf", ".py", ".log", ".yaml",
           ".yml", ".zip", ".db", ".npy")


def list_sources(src: Path) -> list[str]:
    """The units of work below ``src``: each NIfTI / 2-D image file, and each folder's DICOM
    files together (the folder's path: a series is one volume, as in napari), or a lone file."""
    from training.io.images import is_image_path
    from training.io.nifti import is_nifti_path

    if src.is_file():
        return [str(src)]
    sources = []
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = [os.path.join(root, n) for n in sorted(names)
                 if not n.startswith(".") and not n.lower().endswith(IGNORED)
                 and n.upper() != "DICOMDIR"]
        dicom = [f for f in files if not (is_nifti_path(f) or is_image_path(f))]
        sources += [f for f in files if f not in dicom]
        sources += [root] if len(dicom) > 1 else dicom
    return sources


def _dicom_files(folder: str) -> list[str]:
    """The files of a DICOM-folder source (as :func:`list_sources` grouped them)."""
    from training.io.images import is_image_path
    from training.io.nifti import is_nifti_path

    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n)) and not n.startswith(".")
            and not n.lower().endswith(IGNORED) and n.upper() != "DICOMDIR"
            and not (is_nifti_path(n) or is_image_path(n))]


def volume_to_slices(vol, prep: Preprocessing, skip_blank: bool = True) -> np.ndarray:
    """A :class:`training.io.Volume` -> (n, S, S) uint8 slices: the model input of
    :mod:`training.data.preprocessing` before standardisation, rounded to 1/255."""
    arr = np.asarray(vol.array)
    if vol.rgb:
        arr = grey(arr)
    arr = arr.reshape(-1, *arr.shape[-2:])
    out = np.empty((arr.shape[0], prep.input_size, prep.input_size), np.uint8)
    for start in range(0, arr.shape[0], 32):  # bounded memory on 1000-slice volumes
        idx = range(start, min(start + 32, arr.shape[0]))
        unit = unit_slices(arr, prep, vol.modality, vol.window, idx)[:, 0].numpy()
        out[idx.start:idx.stop] = np.round(unit * 255)
    if skip_blank:
        out = out[np.ptp(out.reshape(len(out), -1), axis=1) > 0]
    return out


def process_file(path: str, prep: Preprocessing, skip_blank: bool, threads: int | None = None):
    """-> (path, {modality: count}, slices or None, error or None). Runs in a worker."""
    from training.io import ImageReadError, read_image

    if threads:
        torch.set_num_threads(threads)
    try:
        result = read_image(_dicom_files(path) if os.path.isdir(path) else path)
        inner = [{"path": p, "reason": r} for p, r in result.report.skipped]
        volumes = [v for v in result if v.kind == "image"]
        if not volumes:
            return path, {}, None, "no image data (labels or non-image object)"
        parts, counts = [], Counter()
        for v in volumes:
            s = volume_to_slices(v, prep, skip_blank)
            parts.append(s)
            counts[v.modality.upper() or "OT"] += len(s)
        slices = np.concatenate(parts) if parts else None
        if slices is None or len(slices) == 0:
            return path, {}, None, "every slice is blank"
        return path, dict(counts), slices, None, inner
    except ImageReadError as e:
        return path, {}, None, e.reason
    except Exception as e:  # a reader bug must not end a million-file job: report it
        return path, {}, None, f"{type(e).__name__}: {e}"


class ShardWriter:
    """Buffers whole files' slices; writes a shard (atomically) when it is full, and the
    manifest after each shard, so an interruption loses at most one shard of work."""

    def __init__(self, out: Path, prep: Preprocessing, shard_size: int):
        self.out, self.shard_size = out, shard_size
        out.mkdir(parents=True, exist_ok=True)
        path = out / MANIFEST
        size = prep.input_size
        if path.exists():
            self.manifest = json.loads(path.read_text())
            if self.manifest.get("format") != SHARD_FORMAT or self.manifest["image_size"] != size:
                raise SystemExit(f"{path}: existing shards are not {size}px {SHARD_FORMAT}; "
                                 "use another OUT folder")
            before = self.manifest.get("preprocessing")
            if before is not None and before != prep.to_dict():
                diff = prep.changes_from(Preprocessing.from_dict(before))
                raise SystemExit(f"{path}: existing shards were made with other preprocessing "
                                 f"({diff}); use the same options or another OUT folder")
        else:
            self.manifest = {"format": SHARD_FORMAT, "image_size": size,
                             "preprocessing": prep.to_dict(), "shards": [],
                             "counts_per_modality": {}, "skipped": [], "total_images": 0}
        self._reset()

    def _reset(self):
        self.parts, self.sources, self.modalities, self.count, self.skips = [], [], Counter(), 0, []

    def done_sources(self) -> set[str]:
        done = {s for shard in self.manifest["shards"] for s in shard["sources"]}
        return done | {s["path"] for s in self.manifest["skipped"]}

    def add(self, path: str, counts: dict, slices, error, inner_skips=()) -> None:
        self.skips += list(inner_skips)  # unreadable files inside a DICOM folder
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


def prepare(src: Path, out: Path, size: int | None = None, shard_size: int = 2048,
            workers: int = 1, prep: Preprocessing | None = None, skip_blank: bool = True,
            threads: int | None = None) -> dict:
    """Shard every readable image below ``src`` into ``out``; returns the manifest.

    ``prep`` (default :class:`Preprocessing`; ``size`` overrides its ``input_size``) is applied
    exactly as inference applies it, and stored in the manifest under ``preprocessing``.
    """
    prep = prep or Preprocessing()
    if size is not None:
        prep = dataclasses.replace(prep, input_size=size)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    writer = ShardWriter(out, prep, shard_size)
    done = writer.done_sources()
    todo = [f for f in list_sources(src) if f not in done]
    if done:
        log.info("resuming: %d files already done, %d to go", len(done), len(todo))
    log.info("preprocessing: %s", prep.describe())
    args = [(f, prep, skip_blank, threads) for f in todo]
    bar = Progress(len(todo), "prepare", unit="file")
    try:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                # map keeps the input order: shards are reproducible whatever the timing
                for result in pool.map(_process_star, args, chunksize=8):
                    writer.add(*result)
                    bar.update(1, slices=writer.manifest["total_images"] + writer.count)
        else:
            for a in args:
                writer.add(*process_file(*a))
                bar.update(1, slices=writer.manifest["total_images"] + writer.count)
    finally:
        writer.flush()  # a clean stop (Ctrl-C, error) keeps everything finished so far
        bar.close()
    return writer.manifest


def _process_star(a):
    return process_file(*a)


def parse_ct_window(text: str | None) -> tuple[float, float] | None | str:
    """``--ct-window``: a preset name, ``CENTER,WIDTH``, or ``header``; raises ValueError."""
    from training.io.windowing import CT_PRESETS

    if text is None:
        return DEFAULT_CT_WINDOW
    if text == "header":
        return None
    if text in CT_PRESETS:
        return CT_PRESETS[text]
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        center, width = 0.0, -1.0
    if width <= 0:
        raise ValueError(f"--ct-window {text!r}: use a preset ({', '.join(CT_PRESETS)}), "
                         "CENTER,WIDTH with WIDTH > 0, or 'header'")
    return center, width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="file or folder tree of DICOM / NIfTI / 2-D images")
    p.add_argument("out", type=Path, help="output folder for shards and manifest.json")
    p.add_argument("--size", type=int, default=224,
                   help="slice side in pixels, the model input (default: 224)")
    p.add_argument("--shard-size", type=int, default=2048, help="slices per shard (default: 2048)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="reader processes (default: all cores)")
    p.add_argument("--ct-window", default=None,
                   help="CT window for every file: a preset name (e.g. 'soft tissue', 'lung'), "
                        "CENTER,WIDTH, or 'header' (each file's DICOM window, else {:g},{:g}); "
                        "default: {:g},{:g} (the model-card default)".format(
                            *DEFAULT_CT_WINDOW, *DEFAULT_CT_WINDOW))
    p.add_argument("--modality", help="modality of files whose header has none (NIfTI, PNG): "
                                      "'CT' applies the CT window to them")
    p.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   default=Preprocessing().percentiles,
                   help="non-CT images: these percentiles map to 0 and 1 (default: 0.5 99.5)")
    p.add_argument("--percentile-scope", choices=("slice", "volume"), default="slice",
                   help="take the percentiles over each slice (as inference does by default) or "
                        "over each whole volume (default: slice)")
    p.add_argument("--keep-blank", action="store_true", help="keep constant (blank) slices")
    p.add_argument("--threads", type=int, help="torch CPU threads per reader process (default: 1 "
                   "with several workers, else the CPUs this process may use); OpenMP waits "
                   "passively unless $OMP_WAIT_POLICY says otherwise")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    configure_threads(args.threads or (1 if args.workers > 1 else None))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prep = Preprocessing(input_size=args.size, modality=args.modality,
                             ct_window=parse_ct_window(args.ct_window),
                             percentiles=tuple(args.percentiles),
                             percentile_scope=args.percentile_scope)
    except ValueError as e:
        p.error(str(e))
    try:
        m = prepare(args.src, args.out, None, args.shard_size, args.workers, prep,
                    not args.keep_blank, args.threads or (1 if args.workers > 1 else None))
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    print(f"{m['total_images']} slices in {len(m['shards'])} shards; per modality: "
          f"{m['counts_per_modality']}; skipped {len(m['skipped'])} files "
          f"(see {args.out / MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
