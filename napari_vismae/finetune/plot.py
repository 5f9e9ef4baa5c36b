"""The live plot of a run: training loss, and held-out Dice per fold, in napari's theme.

Kept cheap for the GUI thread: matplotlib's Qt backend is imported (and its fonts loaded)
in a background thread when the widget opens, the canvas is created on the first run,
lines are updated in place (no ``clear()``), and redraws are coalesced (at most one per
``REDRAW_MS``).
"""
from __future__ import annotations

import threading

LOSS, SCORE = "#56B4E9", "#E69F00"  # Okabe-Ito: readable on dark and light
LABELS = {"cv_dice": "held-out Dice (fold)", "val_dice": "validation Dice",
          "cv_accuracy": "held-out accuracy (fold)", "val_accuracy": "validation accuracy"}
REDRAW_MS = 400
WARM_UP_DELAY_MS = 1500


def _warm_up() -> None:
    """Import the backend and render one figure off-screen (fonts, caches)."""
    from matplotlib.backends import backend_qtagg  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.2))
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("step")
    FigureCanvasAgg(fig).draw()


class PlotView:
    """A small matplotlib canvas that follows ``viewer.theme`` and never widens the dock."""

    def __init__(self, w):
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QVBoxLayout, QWidget

        self.w = w
        self.holder = QWidget()
        self.holder.setLayout(QVBoxLayout())
        self.holder.layout().setContentsMargins(0, 0, 0, 0)
        self.canvas = None
        self.warm = threading.Thread(target=_warm_up, daemon=True, name="vismae-plot-warm-up")
        QTimer.singleShot(WARM_UP_DELAY_MS, self._start_warm_up)  # after the widget opened
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._redraw)
        self.metric = ""
        self.steps, self.losses, self.score_steps, self.scores = [], [], [], []
        self.bounds: list[int] = []  # where each fold starts
        w.viewer.events.theme.connect(self._on_theme)

    def _start_warm_up(self) -> None:
        if not self.warm.is_alive() and self.warm.ident is None:
            self.warm.start()

    def disconnect(self) -> None:
        try:
            self.timer.stop()
            self.w.viewer.events.theme.disconnect(self._on_theme)
        except (RuntimeError, TypeError, ValueError):
            pass

    def _ensure(self) -> bool:
        """Create the canvas once the warm-up thread is done (False: not yet)."""
        if self.canvas is not None:
            return True
        self._start_warm_up()
        if self.warm.is_alive():
            return False
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QSizePolicy

        fig = Figure(figsize=(3.2, 2.0))
        fig.subplots_adjust(left=0.17, right=0.83, bottom=0.2, top=0.95)
        self.canvas = FigureCanvasQTAgg(fig)
        self.canvas.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.canvas.setFixedHeight(190)
        self.holder.layout().addWidget(self.canvas)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.loss_line, = self.ax.plot([], [], color=LOSS, lw=1)
        self.score_line, = self.ax2.plot([], [], "o", color=SCORE, ms=3)
        self.ax.set_xlabel("step", fontsize=8)
        self.ax.set_ylabel("training loss", color=LOSS, fontsize=8)
        self.ax2.set_ylim(0, 1)
        self.ax2.patch.set_alpha(0)
        self.vlines = []
        self._apply_theme()
        return True

    # -- data ------------------------------------------------------------------------------------
    def reset(self, metric: str = "") -> None:
        self.metric = metric
        self.steps, self.losses, self.score_steps, self.scores = [], [], [], []
        self.bounds = []
        if self.canvas is not None:
            for v in self.vlines:
                v.remove()
            self.vlines = []
        self.draw()

    def baseline(self, score) -> None:
        if score is not None:
            self.score_steps.append(0)
            self.scores.append(score)

    def add(self, ev: dict) -> None:
        kind = ev.get("kind")
        if kind == "step":
            self.steps.append(ev["step"])
            self.losses.append(ev["loss"])
        elif kind == "epoch" and ev.get("score") is not None:
            self.score_steps.append(ev["step"])
            self.scores.append(ev["score"])
        elif kind == "phase" and ev.get("phase") == "fold" and self.steps:
            self.bounds.append(self.steps[-1])

    # -- drawing ---------------------------------------------------------------------------------
    def colors(self) -> dict:
        from napari.utils.theme import get_theme

        t = get_theme(self.w.viewer.theme)
        return {"bg": t.background.as_hex(), "fg": t.text.as_hex(),
                "grid": t.secondary.as_hex()}

    def _apply_theme(self) -> None:
        c = self.colors()
        self.canvas.figure.set_facecolor(c["bg"])
        self.ax.set_facecolor(c["bg"])
        for a in (self.ax, self.ax2):
            a.tick_params(colors=c["fg"], labelsize=7)
            for spine in a.spines.values():
                spine.set_color(c["grid"])
        self.ax.xaxis.label.set_color(c["fg"])
        for v in self.vlines:
            v.set_color(c["grid"])

    def _on_theme(self, event=None) -> None:
        if self.canvas is not None:
            self._apply_theme()
            self.canvas.draw_idle()

    def draw(self) -> None:
        """Ask for a redraw (coalesced; the first one waits for the warm-up)."""
        if not self.timer.isActive():
            self.timer.start()

    def _redraw(self) -> None:
        if not self._ensure():
            self.timer.start()
            return
        self.ax2.set_ylabel(LABELS.get(self.metric, ""), color=SCORE, fontsize=8)
        self.loss_line.set_data(self.steps, self.losses)
        self.score_line.set_data(self.score_steps, self.scores)
        grid = self.colors()["grid"]
        while len(self.vlines) < len(self.bounds):
            self.vlines.append(self.ax.axvline(self.bounds[len(self.vlines)], color=grid,
                                               lw=0.8, ls=":"))
        self.ax.relim()
        self.ax.autoscale_view()
        right = max(self.steps[-1] if self.steps else 1, self.score_steps[-1]
                    if self.score_steps else 1)
        self.ax.set_xlim(0, right)
        self.canvas.draw_idle()
