"""Training controls, and the run itself: a spawned child process napari survives."""
from __future__ import annotations

import time

from magicgui.widgets import ComboBox, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.qt.threading import create_worker

from training.interactive import finetune as job
from training.interactive.autosave import work_dir_for
from training.interactive.corrections import CorrectionError, validate_sets
from training.interactive.session import DEFAULT_LR, MODES, SessionConfig

from .._models import choice_label, events, get_store
from .common import narrow, notify, wrap

DEVICES = ("auto", "cpu", "cuda", "mps")
VALIDATION = (("auto (cross-validated with >= 3 corrected slices)", "auto"),
              ("none", "none"))
POLL_MS = 100


def trainable_choices(_widget=None):
    return [(choice_label(e), e) for e in get_store().list()
            if e.card.task in ("segmentation", "classification")]


class RunView:
    def __init__(self, w):
        from qtpy.QtCore import QTimer

        self.w = w
        self.model = narrow(ComboBox(label="base model", choices=trainable_choices))
        self.mode = ComboBox(label="mode", choices=MODES, value="decoder")
        self.length = SpinBox(label="length", min=1, max=1_000_000, value=150)
        self.unit = ComboBox(label="unit", choices=("steps", "epochs"), value="steps")
        self.lr = LineEdit(label="learning rate", value="1e-3")
        self.batch = SpinBox(label="batch size", min=1, max=256, value=4)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.validation = narrow(ComboBox(label="validation", choices=VALIDATION, value="auto"))
        self.run_button = PushButton(text="Fine-tune")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self.status = wrap(Label(value=""))
        self.scores = wrap(Label(value=""))
        self.mode.changed.connect(lambda m: setattr(self.lr, "value", f"{DEFAULT_LR[m]:g}"))
        self.run_button.changed.connect(lambda *_: self.run())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.proc = self.conn = self.stop_event = self.preparer = None
        self.result = None
        self.errors: list[str] = []
        self.timer = QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)

    @property
    def widgets(self) -> list:
        return [self.model, self.mode, self.length, self.unit, self.lr, self.batch, self.device,
                self.validation]

    @property
    def run_widgets(self) -> list:
        return [self.run_button, self.stop_button, self.progress, self.status, self.scores]

    @property
    def running(self) -> bool:
        return self.preparer is not None or (self.proc is not None and self.result is None)

    def config(self) -> SessionConfig:
        from training.interactive.inference import pick_device

        device = str(pick_device(self.device.value))  # RuntimeError if not available
        try:
            lr = float(self.lr.value)
        except ValueError:
            raise ValueError(f"learning rate {self.lr.value!r} is not a number") from None
        epochs = self.length.value if self.unit.value == "epochs" else None
        val_every = max(1, min(10, self.length.value // 5 or 1)) if epochs is None else 10
        return SessionConfig(mode=self.mode.value, steps=self.length.value, epochs=epochs,
                             val_every=val_every, batch_size=self.batch.value, lr=lr,
                             device=device, validation=self.validation.value)

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.stop_button.enabled = running
        self.progress.visible = running
        for x in self.w.versions_view.widgets[1:]:
            x.enabled = not running

    # -- start ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Check the training set, autosave, write the job and start the child (returns at
        once; the heavy parts run in a thread and in the child)."""
        if self.running:
            return
        entry = self.model.value
        if entry is None:
            notify("error", "VIS-MAE: choose a base model first.")
            return
        try:
            sets = self.w.study.correction_sets()
            validate_sets(sets, entry.card.num_classes)
            cfg = self.config()
        except (CorrectionError, ValueError, RuntimeError) as e:
            self.status.value = f"cannot fine-tune: {e}"
            notify("error", f"Cannot fine-tune: {e}")
            return
        saving = self.w.autosave_view.autosave()
        user_dir = get_store().user_dir
        lineage = self.w.versions_view.lineage()
        work = work_dir_for(user_dir) / "runs" / time.strftime("%Y%m%d-%H%M%S")
        studies = [{"image": s.image, "slices": s.training_slices(), "key": s.key,
                    "modality": s.modality, "window": list(s.window) if s.window else None}
                   for s in sets]

        def prepare():
            paths = saving.result() if saving is not None else []
            by_key = {p.name: p for p in paths}
            saver = self.w.autosave_view.saver()
            for st in studies:
                st["autosave"] = by_key[saver.path(st["key"]).name]
            return job.write_job(work, entry.path, user_dir, cfg.to_dict(), studies, lineage)

        self.result, self.errors = None, []
        self.w.plot.reset()
        self.progress.max, self.progress.value = 1, 0
        self.scores.value = ""
        self.status.value = f"starting: fine-tuning {entry.name} ({cfg.mode})..."
        self._started = time.perf_counter()
        self.preparer = create_worker(prepare)
        self.preparer.returned.connect(self._launch)
        self.preparer.errored.connect(lambda e: self._failed(f"could not prepare the run: {e}"))
        self.preparer.start()
        self._set_running(True)

    def _launch(self, work) -> None:
        self.preparer = None
        self.work = work
        self.proc, self.conn, self.stop_event = job.start(work)
        self.timer.start()

    # -- while it runs -----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the current step (see the session's rules for what is kept)."""
        if self.stop_event is not None and self.running:
            self.stop_event.set()
            self.status.value = "stopping after the current step..."

    def _poll(self) -> None:
        """Read what the child sent (at most 200 messages per tick); notice if it died."""
        if self.conn is None:
            return
        try:
            for _ in range(200):
                if not self.conn.poll():
                    break
                self._on_message(self.conn.recv())
                if self.conn is None:
                    return
        except (EOFError, OSError):
            self._died()
            return
        if self.proc is not None and not self.proc.is_alive() and not self.conn.poll():
            self._died()

    def _on_message(self, ev: dict) -> None:
        kind = ev.get("kind")
        plot = self.w.plot
        if kind == "start":
            self.progress.max = max(1, ev["total_steps"])
            plot.reset(ev["metric"])
            folds = f", then {ev['folds']}-fold cross-validation" if ev["folds"] else ""
            self.status.value = f"training on {ev['n_train']} corrected slice(s){folds}"
            if ev["validation"] == "too-few":
                self.status.value += " - too few corrected slices to validate"
        elif kind == "baseline":
            plot.baseline(ev["score"])
        elif kind == "phase" and ev["phase"] == "fold":
            plot.add(ev)
            self.status.value = f"cross-validating: fold {ev['fold']} of {ev['folds']}"
        elif kind == "step":
            plot.add(ev)
            self.progress.value = min(ev["step"], self.progress.max)
            if ev["step"] % 5 == 0:
                plot.draw()
        elif kind == "epoch":
            plot.add(ev)
            plot.draw()
        elif kind in ("oom",):
            self.status.value = ev["message"]
        elif kind == "saving":
            self.status.value = "saving the new version..."
        elif kind == "result":
            self._finish(ev)
        elif kind == "error":
            self.errors.append(ev["message"])
            self._failed(ev["message"])

    # -- the end ---------------------------------------------------------------------------------
    def _close(self) -> None:
        self.timer.stop()
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            self.proc.join(timeout=0.1)
        self.conn = None
        self._set_running(False)

    def _finish(self, res: dict) -> None:
        self.result = res
        self._close()
        self.progress.value = self.progress.max
        self.status.value = f"{res['message']} ({time.perf_counter() - self._started:.0f} s)"
        if res["per_class"]:
            what = "cross-validated" if res["validation"] == "k-fold" else "held-out"
            self.scores.value = f"per class, {what} (start -> fine-tuned, slices): " + "; ".join(
                f"{c['name']} {c['start']:.2f} -> {c['score']:.2f} ({c['n_slices']})"
                for c in res["per_class"])
        self.w.plot.draw()
        if res["entry"] is None:
            return
        events.models_changed.emit()
        self.w.versions_view.refresh(res["entry"])
        if res["active"]:
            self.w.select_model(res["entry"])
            if self.w.uncertain.auto.value and self.w.task == "segmentation":
                self.w.uncertain.resegment_current(self.model.value)
        else:
            notify("info", f"VIS-MAE: {res['message']}")

    def _failed(self, message: str) -> None:
        self.preparer = None
        self._close()
        self.status.value = f"fine-tuning failed: {message}; your corrections and the " \
                            "active version are unchanged"
        notify("error", f"VIS-MAE fine-tuning failed: {message}")

    def _died(self) -> None:
        if self.result is not None or self.errors:
            self._close()
            return
        code = self.proc.exitcode if self.proc is not None else None
        self._failed(f"the training process ended unexpectedly (exit code {code})")

    def shutdown(self) -> None:
        """napari is closing (or the widget): end the child now."""
        if self.stop_event is not None:
            self.stop_event.set()
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        try:
            self.timer.stop()
        except RuntimeError:
            pass
