"""Classify widget: class probabilities for the current slice or a whole study.

For a study, the per-slice probabilities are plotted along the slice axis and
aggregated (mean over slices) into one decision.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    Table,
    create_widget,
)

from ._domain import WARN_STYLE, DomainGuard
from ._layers import current_slice, image_array, modality_and_window, unwrap
from ._models import follow_model_changes, model_choices, models_loading
from ._segment_widget import wrap
from ._worker import MODELS, start_worker

if TYPE_CHECKING:
    import napari

SCOPES = ("current slice", "whole study")


class ClassifyWidget(Container):
    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = unwrap(napari_viewer)
        self._image = create_widget(annotation="napari.layers.Image", label="image")
        self._model = ComboBox(label="model", choices=model_choices("classification"))
        self._scope = ComboBox(label="scope", choices=SCOPES, value="whole study")
        self._device = ComboBox(label="device", choices=("auto", "cpu", "cuda", "mps"),
                                value="auto")
        self._run = PushButton(text="Classify")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", value=0, max=1, visible=False)
        self.table = Table(value={"class": [], "probability": []}, label="result")
        self._decision = wrap(Label(value=""))
        self._guard = DomainGuard()
        # a classifier whose card says it is no better than chance is labelled so
        self._chance = wrap(Label(value="", visible=False))
        self._chance.native.setStyleSheet(WARN_STYLE)
        self.extend([self._image, self._model, self._scope, self._device, self._chance,
                     *self._guard.widgets, self._run, self._cancel, self._progress, self.table,
                     self._decision])
        self._image.changed.connect(self._check_model)
        self._model.changed.connect(self._check_model)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        follow_model_changes(self, self._on_models_changed)
        self.native.destroyed.connect(lambda *_: self.cancel())
        self._models = MODELS
        self._canvas = None
        self.worker = None
        self.last_result = None
        self.reset_choices()
        self._on_models_changed()

    def reset_choices(self, *_):
        super().reset_choices()
        if hasattr(self, "_guard"):
            self._check_model()

    def _check_model(self, *_):
        """Domain guard and the chance label for the current image and model."""
        entry = self._model.value
        self._guard.update(self._image.value, entry)
        warning = entry.card.chance_warning() if entry is not None else None
        self._chance.value = f"⚠ NO BETTER THAN CHANCE: {warning}" if warning else ""
        self._chance.visible = bool(warning)

    def _on_models_changed(self, *_):
        self.reset_choices()
        if models_loading() and self._model.value is None:
            self._decision.value = "loading models…"
        elif self._decision.value == "loading models…":
            self._decision.value = ""

    def run(self) -> None:
        from napari.utils.notifications import show_error

        if self.worker is not None and self.worker.is_running:
            return
        layer, entry = self._image.value, self._model.value
        if layer is None or entry is None:
            show_error("The models are still loading; try again in a moment." if models_loading()
                       else "Choose an image layer and a classification model first.")
            return
        self._check_model()
        if self._guard.blocks():
            self._decision.value = ("not run: the image is outside the model's domain (see the "
                                    "warning above); tick 'apply anyway' to run it regardless")
            return
        try:
            data = image_array(layer)
        except ValueError as e:
            show_error(str(e))
            return
        slices = ([current_slice(self.viewer, layer)]
                  if data.ndim == 3 and self._scope.value == "current slice" else None)
        n = 1 if data.ndim == 2 else len(slices or range(data.shape[0]))
        modality, window = modality_and_window(layer)
        batches = -(-n // 16)
        self._progress.max, self._progress.value, self._progress.visible = batches, 0, True
        self._run.enabled, self._cancel.enabled = False, True
        self._started = time.perf_counter()
        self.worker = start_worker(
            self._models, entry, "classify", data,
            dict(slices=slices, modality=modality, window=window, batch_size=16),
            self._device.value,
            total=batches, desc=f"VIS-MAE classify ({entry.name})",
            on_progress=lambda p: setattr(self._progress, "value", min(-(-p.done // 16), batches)),
            on_result=lambda r: self._on_result(r, entry), on_error=self._on_error,
            on_aborted=self._done)

    def cancel(self) -> None:
        if self.worker is not None and self.worker.is_running:
            self.worker.quit()

    def _done(self) -> None:
        self._run.enabled, self._cancel.enabled, self._progress.visible = True, False, False

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self._done()
        show_error(f"Classification failed: {exc}")

    def _on_result(self, result, entry) -> None:
        self._done()
        self.last_result = result
        names = entry.card.class_names
        probs = result.aggregate()
        self.table.value = {"class": names, "probability": [f"{p:.3f}" for p in probs]}
        from training.interactive.ood import summary

        what = "slice" if len(result.slices) == 1 else f"study ({len(result.slices)} slices, mean)"
        top = f"{names[int(np.argmax(probs))]} ({probs.max():.2f})"
        if entry.card.chance_warning():
            self._decision.value = (f"{what}: no decision — this model is no better than chance "
                                    f"on its validation data (highest probability: {top}). "
                                    f"{summary(result.ood)}")
        else:
            self._decision.value = f"{what}: {top}. {summary(result.ood)}"
        if len(result.slices) > 1:
            self._plot(result, names)

    def _plot(self, result, names) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        if self._canvas is None:
            self._canvas = FigureCanvasQTAgg(Figure(figsize=(3, 2), tight_layout=True))
            self._canvas.setMinimumSize(120, 160)
            self._canvas.setMaximumHeight(240)
            self.native.layout().addWidget(self._canvas)
        fg, bg = theme_colors(self.viewer)
        fig = self._canvas.figure
        fig.clear()
        fig.set_facecolor(bg)
        ax = fig.add_subplot()
        ax.set_facecolor(bg)
        for k, name in enumerate(names):
            ax.plot(result.slices, result.probabilities[:, k], label=name)
        ax.set_xlabel("slice", color=fg)
        ax.set_ylabel("probability", color=fg)
        ax.tick_params(colors=fg)
        for spine in ax.spines.values():
            spine.set_color(fg)
        ax.set_ylim(0, 1)
        legend = ax.legend(fontsize="small", facecolor=bg, edgecolor=fg)
        for text in legend.get_texts():
            text.set_color(fg)
        self._canvas.draw_idle()


def theme_colors(viewer) -> tuple[str, str]:
    """(text, background) colours of the viewer's napari theme, for plots."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return theme.text.as_hex(), theme.canvas.as_hex()
    except Exception:  # noqa: BLE001 - a plot in default colours is still a plot
        return "#000000", "#ffffff"
