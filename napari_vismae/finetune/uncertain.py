"""Active learning: jump to the slice the model is least sure about; re-segment the current
slice with a new version (never a corrected slice, never a locked class)."""
from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, PushButton
from napari.qt.threading import create_worker

from .. import _tracking
from .._layers import apply_prediction_diff, image_array, modality_and_window
from .._worker import ModelCache, start_worker
from .common import notify
from .study import key_of


def keep_locked(current: np.ndarray, new: np.ndarray, locked) -> np.ndarray:
    """``new`` where neither the current nor the new label is a locked class."""
    if not locked:
        return new
    locked = np.asarray(sorted(locked))
    keep = np.isin(current, locked) | np.isin(new, locked)
    return np.where(keep, current, new).astype(current.dtype, copy=False)


class UncertainView:
    def __init__(self, w):
        self.w = w
        self.next = PushButton(text="Next uncertain slice", tooltip=(
            "Jump to the slice the model is least sure about, away from slices you already "
            "corrected or visited. Tip: first correct 2-3 slices spread over the volume "
            "(docs/simulated_user.md: that needs the fewest corrections)"))
        self.auto = CheckBox(text="re-segment current slice after training", value=True)
        self.next.changed.connect(lambda *_: self.next_uncertain())
        self.cache = ModelCache()
        self.worker = None
        self.ranking = None
        self.ranking_key = None
        self.visited: set[int] = set()

    @property
    def widgets(self) -> list:
        return [self.next, self.auto]

    def forget(self) -> None:
        self.ranking_key = None

    def _model(self):
        vs, lineage = self.w.versions_view.store(), self.w.versions_view.lineage()
        active = vs.active(lineage) if lineage else None
        return active or self.w.model_entry()

    def next_uncertain(self) -> None:
        """Jump to the most uncertain slice not yet corrected or visited (ranks in a worker
        the first time, and again after the model changes)."""
        img, entry = self.w.study.image.value, self._model()
        if img is None or entry is None or entry.card.task != "segmentation":
            notify("info", "VIS-MAE: choose an image and a segmentation model to rank slices")
            return
        key = (str(entry.path), key_of(img))
        if self.ranking is not None and self.ranking_key == key:
            self._jump()
            return
        data = image_array(img)
        modality, window = modality_and_window(img)
        device = self.w.run_view.device.value
        self.w.set_status(f"ranking slices by the uncertainty of {entry.name}...")

        def work():
            from training.interactive.active_learning import rank_steps
            from training.interactive.inference import pick_device

            dev = pick_device(device)
            model, card = self.cache.get(entry, dev)
            return (yield from rank_steps(model, card, data, modality=modality, window=window,
                                          device=dev))

        def done(ranking):
            self.ranking, self.ranking_key, self.visited = ranking, key, set()
            self._jump()

        self.worker = create_worker(work, _progress={"total": 0, "desc": "VIS-MAE ranking"})
        self.worker.returned.connect(done)
        self.worker.errored.connect(lambda e: notify("error", f"VIS-MAE: ranking failed: {e}"))
        self.worker.start()

    def _jump(self) -> None:
        img, lab = self.w.study.image.value, self.w.study.labels.value
        z = self.ranking.next_after(self.visited, self.w.study.corrected(lab) if lab else ())
        if z is None:
            self.w.set_status("every slice has been visited or corrected")
            return
        self.visited.add(z)
        rank = self.ranking.slices.index(z)
        if img.ndim >= 3:
            world = img.data_to_world([z] + [0] * (img.ndim - 1))
            self.w.viewer.dims.set_point(0, float(world[0]))
        if lab is not None and lab.ndim >= 3 and not np.asarray(lab.data[z]).any():
            pred = self.ranking.result.labels
            if pred.ndim >= 3:
                self._write(lab, pred, z)
        self.w.set_status(f"slice {z}: uncertainty {self.ranking.scores[rank]:.3f} "
                          f"(rank {rank + 1} of {len(self.ranking.slices)})")

    def _write(self, lab, pred: np.ndarray, z: int | None) -> None:
        """Write a prediction (the whole 2-D image, or slice ``z``) unless corrected; locked
        classes stay as they are."""
        if z is not None and z in _tracking.corrected_slices(lab):
            return
        cur = np.asarray(lab.data[z] if z is not None else lab.data)
        part = pred[z] if z is not None and pred.ndim == cur.ndim + 1 else pred
        new = keep_locked(cur, part.astype(cur.dtype, copy=False), _tracking.locked_classes(lab))
        changed = np.nonzero(cur != new)
        idx = changed if z is None else (np.full(changed[0].size, z, np.intp), *changed)
        apply_prediction_diff(lab, idx, new[changed])

    def resegment_current(self, entry) -> None:
        """Segment the current slice with ``entry``; written only if it is not corrected."""
        img, lab = self.w.study.image.value, self.w.study.labels.value
        if img is None or lab is None:
            return
        data = image_array(img)
        z = self.w.study.slice_now()
        if z in self.w.study.corrected(lab):
            self.w.add_status(f"slice {z} is corrected, not re-segmented")
            return
        modality, window = modality_and_window(img)
        kwargs = dict(slices=[z] if data.ndim == 3 else None, modality=modality, window=window,
                      batch_size=1)

        def on_result(result):
            self._write(lab, result.labels, z if data.ndim == 3 else None)
            self.w.add_status(f"slice {z} re-segmented with {entry.path.name}")

        self.worker = start_worker(
            self.cache, entry, "segment", data, kwargs, self.w.run_view.device.value, total=1,
            desc="VIS-MAE re-segment", on_progress=lambda p: None, on_result=on_result,
            on_error=lambda e: notify("warning", f"VIS-MAE: re-segmenting failed: {e}"),
            on_aborted=lambda: None)
