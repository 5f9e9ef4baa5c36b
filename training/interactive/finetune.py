"""A correction fine-tune as a job on disk, run in its own process (the GUI's and the CLI's path).

The napari widget never trains in its own process: a crash there (or triton's LLVM
meeting Mesa's) would take napari and the user's unsaved work down. Instead it
autosaves the corrections, writes a *job folder* with :func:`write_job`, and starts
:func:`child_main` in a **spawned** process (:func:`start`), which reads the job, the
autosaved corrections and the base model from disk, runs
:func:`training.interactive.session.session_steps` and sends every event, then the
result, back over a pipe. The same job runs headless::

    python -m training.interactive.finetune --work DIR

printing one JSON event per line. Both write ``DIR/result.json`` (atomically) at the end.
Stopping: the GUI sets a shared event (Stop) or kills the process (closing napari);
headless, Ctrl+C or a file ``DIR/stop``. Versions are written atomically and only at the
end, so a killed child leaves the corrections and the active version as they were.

Job folder: ``job.json`` (base model path, versions folder, lineage, session config and
one entry per study: its autosave file, key, modality, window) and ``study-<k>.npz``
with the image slices to train on (``image``, ``slices``); the labels and the corrected
slices come from the autosave file.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from training.runtime.threads import configure_threads

if __name__ == "__main__":  # the CLI: passive OpenMP waiting and threads before torch loads
    configure_threads(argv=sys.argv[1:])

import numpy as np  # noqa: E402

from training.interactive.autosave import read_saved  # noqa: E402
from training.interactive.corrections import CorrectionError, CorrectionSet  # noqa: E402
from training.runtime.atomic import atomic_path, atomic_write_text  # noqa: E402


def write_job(work: str | Path, base: str | Path, versions_root: str | Path, config: dict,
              studies: Sequence[dict], lineage: str | None = None,
              val_studies: Sequence[dict] = ()) -> Path:
    """Write a job folder. ``studies``: dicts with ``autosave`` (path of the study's
    autosave file), ``image`` (the study's (z, y, x) or (y, x) array), ``slices`` (the
    training slice indices), ``key``, ``modality``, ``window``, optional ``image_sha256``.
    ``val_studies`` (same form; ``slices`` = the slices to validate on, labels from the
    autosave file) replace the cross-validation by validation on them (benchmarks)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, st in enumerate([*studies, *val_studies]):
        image = np.asarray(st["image"])
        slices = sorted(int(i) for i in st["slices"])
        part = image[None] if image.ndim == 2 else image[slices]
        name = f"study-{k}.npz"
        with atomic_path(work / name, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, image=part, slices=np.asarray(slices, np.int64),
                     shape=np.asarray(image.shape, np.int64))
        entries.append({"file": name, "autosave": str(st["autosave"]), "key": st["key"],
                        "modality": st.get("modality"), "window": st.get("window"),
                        "image_sha256": st.get("image_sha256"),
                        "validation": k >= len(studies)})
    job = {"base": str(base), "versions_root": str(versions_root), "lineage": lineage,
           "config": config, "studies": entries}
    atomic_write_text(work / "job.json", json.dumps(job, indent=1))
    return work


def load_study(work: Path, entry: dict, task: str) -> CorrectionSet:
    """A compact :class:`CorrectionSet` of the training slices of one study of a job."""
    with np.load(work / entry["file"], allow_pickle=False) as z:
        image, slices = z["image"], [int(i) for i in z["slices"]]
        shape = tuple(int(n) for n in z["shape"])
    saved = read_saved(entry["autosave"])
    if saved.key != entry["key"]:
        raise CorrectionError(f"{entry['autosave']} holds the corrections of another study")
    local = {z: i for i, z in enumerate(slices)}
    origin = {"shape": list(shape), "slices": slices, "image_sha256": entry.get("image_sha256")}
    window = tuple(entry["window"]) if entry.get("window") else None
    if task == "classification":
        tags = {local[z]: c for z, c in saved.tags.items() if z in local}
        return CorrectionSet(image, None, tags=tags, key=entry["key"], task=task,
                             modality=entry.get("modality"), window=window, origin=origin)
    if saved.labels is None or tuple(saved.labels.shape) != shape:
        raise CorrectionError(f"{entry['autosave']} has no labels of shape {shape}")
    labels = saved.labels[None] if saved.labels.ndim == 2 else saved.labels[slices]
    corrected = set(local.values()) if entry.get("validation") else \
        {local[z] for z in saved.corrected if z in local}
    return CorrectionSet(image, labels, corrected=corrected, key=entry["key"], task=task,
                         modality=entry.get("modality"), window=window, origin=origin)


class _Stop:
    """Stop when a shared event is set or the file ``<work>/stop`` exists."""

    def __init__(self, work: Path, event=None):
        self.work, self.event = work, event

    def is_set(self) -> bool:
        return bool(self.event is not None and self.event.is_set()) or \
            (self.work / "stop").exists()


def run_job(work: str | Path, emit: Callable[[dict], None], stop_event=None) -> dict:
    """Run the job in ``work``; ``emit`` gets every event and finally the result (a dict,
    also written to ``work/result.json`` and returned)."""
    from training.interactive.session import SessionConfig, session_steps
    from training.weights.checkpoint import read_model_card
    from training.weights.store import ModelEntry
    from training.weights.versions import VersionStore

    work = Path(work)
    job = json.loads((work / "job.json").read_text())
    base = Path(job["base"])
    card = read_model_card(base)
    entry = ModelEntry(card.name, base, card, "user")
    sets = [load_study(work, s, card.task) for s in job["studies"] if not s.get("validation")]
    val = [load_study(work, s, card.task) for s in job["studies"] if s.get("validation")]
    cfg = SessionConfig.from_dict(job["config"])
    gen = session_steps(entry, sets, cfg, VersionStore(job["versions_root"]),
                        _Stop(work, stop_event), lineage=job.get("lineage"), val_sets=val)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = {"kind": "result", **stop.value.to_dict()}
            break
        emit(_plain(ev))
    atomic_write_text(work / "result.json", json.dumps(result, indent=1))
    emit(result)
    return result


def _plain(ev: dict) -> dict:
    """Events as JSON-able plain values (numpy scalars -> floats)."""
    return json.loads(json.dumps(ev, default=lambda o: o.item() if hasattr(o, "item") else
                                 str(o)))


def child_main(work: str, conn, stop_event) -> None:
    """Entry point of the spawned process: events and the result go through ``conn``; an
    exception becomes ``{'kind': 'error', 'message', 'traceback'}``."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if hasattr(os, "nice"):  # training yields the CPU to napari's GUI thread
        try:
            os.nice(10)
        except OSError:
            pass
    try:
        run_job(work, conn.send, stop_event)
    except BaseException as e:  # noqa: BLE001 - reported to the GUI, then the process ends
        try:
            conn.send({"kind": "error", "message": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()})
        except (OSError, ValueError):
            pass
    finally:
        conn.close()


def start(work: str | Path):
    """Start :func:`child_main` on ``work`` in a spawned process (never forked: a fork of
    napari would copy its GL and Qt state). Returns ``(process, connection, stop_event)``."""
    import multiprocessing as mp
    import multiprocessing.spawn as mp_spawn

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    stop_event = ctx.Event()
    proc = ctx.Process(target=child_main, args=(str(work), theirs, stop_event), daemon=True,
                       name="vismae-finetune")
    # spawn normally re-runs the parent's main script in the child; a napari script without
    # an ``if __name__ == "__main__"`` guard would open a second napari there. The child
    # needs nothing from it (child_main lives in this importable module): leave it out.
    prepare = mp_spawn.get_preparation_data

    def without_main(name):
        data = prepare(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    mp_spawn.get_preparation_data = without_main
    try:
        proc.start()
    finally:
        mp_spawn.get_preparation_data = prepare
    theirs.close()
    return proc, ours, stop_event


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.interactive.finetune",
                                description=__doc__.split("\n\n")[0],
                                epilog="Stop with Ctrl+C or by creating DIR/stop.")
    p.add_argument("--work", required=True, type=Path, help="the job folder (job.json)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use)")
    args = p.parse_args(argv)
    if not (args.work / "job.json").is_file():
        p.error(f"{args.work / 'job.json'} does not exist")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = run_job(args.work, lambda ev: print(json.dumps(ev), flush=True), stop)
    except (CorrectionError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if result["status"] else 1


if __name__ == "__main__":
    sys.exit(main())
