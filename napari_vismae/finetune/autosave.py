"""Never lose a correction: autosave off the GUI thread, and Restore after a crash."""
from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from magicgui.widgets import PushButton
from napari.qt.threading import create_worker

from training.interactive.autosave import Autosave, AutosaveError, work_dir_for
from training.interactive.corrections import CorrectionError

from .. import _tracking
from .._layers import aligned_with, apply_prediction_diff, prediction_diff
from .._models import get_store
from .common import notify
from .study import TAGS, key_of, tags_of

AUTOSAVE_IDLE_MS = 3000


class AutosaveView:
    """Saves the study's corrections 3 s after the last edit and before every run (the
    labels are copied on the GUI thread, compressed and written in a background thread),
    and offers them back when the same study is opened again."""

    def __init__(self, w):
        from qtpy.QtCore import QTimer

        self.w = w
        self.restore_button = PushButton(text="Restore corrections", visible=False)
        self.restore_button.changed.connect(lambda *_: self.restore())
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vismae-autosave")
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_IDLE_MS)
        self.timer.timeout.connect(self.autosave)
        self.pending = None  # SavedCorrections offered for restore
        self.offered: set[str] = set()
        self.checker = None  # the worker looking for a saved study
        self.last_error: str | None = None

    def saver(self) -> Autosave:
        return Autosave(work_dir_for(get_store().user_dir))

    def touch(self) -> None:
        """An edit happened: save when the user pauses."""
        self.timer.start()

    def autosave(self) -> Future | None:
        """Save the corrections now (in the background); the future gives the paths."""
        try:
            sets = self.w.study.correction_sets(snapshot=True)
        except (CorrectionError, ValueError):
            return None
        sets = [s for s in sets if s.training_slices() or s.tags]
        if not sets:
            return None
        saver = self.saver()
        return self.pool.submit(lambda: [saver.save(s) for s in sets])

    # -- restore -------------------------------------------------------------------------------
    def check(self, image_layer) -> None:
        """Look (in a thread) for autosaved corrections of ``image_layer``'s study."""
        self.restore_button.visible = False
        self.pending = None
        if image_layer is None:
            return
        saver = self.saver()

        def look():
            try:
                return image_layer, saver.load(key_of(image_layer)), None
            except AutosaveError as e:
                return image_layer, None, str(e)

        self.checker = create_worker(look)
        self.checker.returned.connect(self._offer)
        self.checker.start()

    def _offer(self, found) -> None:
        try:
            self._offer_now(*found)
        except RuntimeError:  # the widget was closed while the file was read
            pass

    def _offer_now(self, layer, saved, error) -> None:
        if error:
            self.last_error = error
            notify("warning", f"VIS-MAE: {error}. Nothing was restored.")
            return
        if saved is None or layer is not self.w.study.image.value:
            return
        lab = self.w.study.labels.value
        already = lab is not None and self.w.study.corrected(lab) >= set(saved.corrected) \
            and tags_of(layer).items() >= saved.tags.items()
        if already or not (saved.corrected or saved.tags):
            return
        self.pending = saved
        when = dt.datetime.fromtimestamp(saved.saved_at).strftime("%Y-%m-%d %H:%M")
        n = len(saved.corrected) or len(saved.tags)
        self.restore_button.text = f"Restore {n} corrected slice(s) saved {when}"
        self.restore_button.visible = True
        if saved.key not in self.offered:
            self.offered.add(saved.key)
            notify("info", f"VIS-MAE: {n} autosaved corrected slice(s) exist for "
                           f"{layer.name!r}; use 'Restore' in the Fine-tune widget")

    def restore(self) -> None:
        """Write the autosaved corrected slices - only those - into the corrections layer
        (the image's latest prediction; a new layer if it has none), as one undo step."""
        saved, img = self.pending, self.w.study.image.value
        if saved is None or img is None:
            return
        if saved.tags:
            img.metadata[TAGS] = {**tags_of(img), **saved.tags}
        if saved.labels is not None and saved.corrected:
            lab = self.w.study.labels.value
            if lab is None or tuple(np.shape(lab.data)) != tuple(saved.labels.shape):
                lab = self._new_layer(img, saved.labels.shape)
            slices = sorted(saved.corrected)
            new = saved.labels.astype(lab.data.dtype, copy=False)
            idx, values = prediction_diff(lab.data, new, slices if lab.ndim >= 3 else None)

            def done(_n, lab=lab, slices=slices):  # a large restore lands over a few turns
                for z in slices:
                    _tracking.mark_corrected(lab, z)
                self._restored(saved)

            apply_prediction_diff(lab, idx, values, on_done=done)
        else:
            self._restored(saved)
        self.restore_button.visible = False
        self.pending = None

    def _restored(self, saved) -> None:
        self.w.study.update_counts()
        self.w.set_status(f"restored {len(saved.corrected) or len(saved.tags)} corrected "
                          "slice(s)")

    def _new_layer(self, img, shape):
        lab = new_corrections_layer(self.w.viewer, img, shape)
        self.w.study.labels.reset_choices()
        self.w.study.labels.value = lab
        return lab

    def shutdown(self) -> None:
        try:
            self.timer.stop()
        except RuntimeError:  # already deleted with the widget
            pass
        self.pool.shutdown(wait=True)  # let a save in progress finish (it is atomic anyway)


def new_corrections_layer(viewer, img, shape):
    """An empty corrections Labels layer aligned with ``img`` (geometry and units)."""
    return viewer.add_labels(np.zeros(shape, np.uint8), name=f"{img.name} corrections",
                             opacity=0.5, metadata={"vismae": {
                                 "role": "corrections", "source_image": img.name}},
                             **aligned_with(img))
