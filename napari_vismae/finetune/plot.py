"""The live plot of a run: training loss, and held-out Dice per fold, in napari's theme.

Drawn with QPainter on a plain QWidget: nothing to import, a repaint costs well under a
millisecond, so the GUI thread never waits for a plotting library. Repaints are
coalesced (at most one per ``REDRAW_MS``).
"""
from __future__ import annotations

from napari.utils.theme import get_theme
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS, SCORE = "#56B4E9", "#E69F00"  # Okabe-Ito: readable on dark and light
LABELS = {"cv_dice": "held-out Dice (fold)", "val_dice": "validation Dice",
          "cv_accuracy": "held-out accuracy (fold)", "val_accuracy": "validation accuracy"}
REDRAW_MS = 250


class _Canvas(QWidget):
    def __init__(self, view):
        super().__init__()
        self.view = view
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.setFixedHeight(170)
        self.setMinimumWidth(120)

    def paintEvent(self, event):  # noqa: N802 (Qt's name)
        p = QPainter(self)
        try:
            self.view.paint(p, self.width(), self.height())
        finally:
            p.end()


class PlotView:
    """Loss (left axis, auto-scaled) and scores (right axis, 0-1) against the step."""

    def __init__(self, w):
        self.w = w
        self.canvas = _Canvas(self)
        self.holder = self.canvas
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.canvas.update)
        self.metric = ""
        self.steps, self.losses, self.score_steps, self.scores = [], [], [], []
        self.bounds: list[int] = []  # where each fold starts
        w.viewer.events.theme.connect(self._on_theme)

    def disconnect(self) -> None:
        try:
            self.timer.stop()
            self.w.viewer.events.theme.disconnect(self._on_theme)
        except (RuntimeError, TypeError, ValueError):
            pass

    # -- data ------------------------------------------------------------------------------------
    def reset(self, metric: str = "") -> None:
        self.metric = metric
        self.steps, self.losses, self.score_steps, self.scores = [], [], [], []
        self.bounds = []
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

    def draw(self) -> None:
        """Ask for a repaint (coalesced)."""
        if not self.timer.isActive():
            self.timer.start()

    # -- painting --------------------------------------------------------------------------------
    def colors(self) -> dict:
        t = get_theme(self.w.viewer.theme)
        return {"bg": t.background.as_hex(), "fg": t.text.as_hex(),
                "grid": t.secondary.as_hex()}

    def _on_theme(self, event=None) -> None:
        self.canvas.update()

    def paint(self, p: QPainter, width: int, height: int) -> None:
        c = self.colors()
        p.fillRect(0, 0, width, height, QColor(c["bg"]))
        p.setRenderHint(QPainter.Antialiasing)
        font = QFont(p.font())
        font.setPointSizeF(7.5)
        p.setFont(font)
        left, right, top, bottom = 36, 36, 16, 20
        box = QRectF(left, top, max(10, width - left - right), max(10, height - top - bottom))
        p.setPen(QPen(QColor(c["grid"]), 1))
        p.drawRect(box)
        xmax = max([1, *self.steps[-1:], *self.score_steps[-1:]])
        lo, hi = (min(self.losses), max(self.losses)) if self.losses else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0

        def x(step):
            return box.left() + box.width() * step / xmax

        def y(v, a=0.0, b=1.0):
            return box.bottom() - box.height() * (v - a) / (b - a)

        pen = QPen(QColor(c["grid"]), 1, Qt.DotLine)
        p.setPen(pen)
        for b in self.bounds:
            p.drawLine(QPointF(x(b), box.top()), QPointF(x(b), box.bottom()))
        if len(self.steps) > 1:
            p.setPen(QPen(QColor(LOSS), 1.2))
            p.drawPolyline(QPolygonF([QPointF(x(s), y(v, lo, hi))
                                      for s, v in zip(self.steps, self.losses, strict=True)]))
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(SCORE))
        for s, v in zip(self.score_steps, self.scores, strict=True):
            p.drawEllipse(QPointF(x(s), y(min(max(v, 0.0), 1.0))), 2.5, 2.5)
        fg = QColor(c["fg"])
        p.setPen(QColor(LOSS))
        p.drawText(QRectF(0, top - 2, left - 3, 12), Qt.AlignRight, f"{hi:.2g}")
        p.drawText(QRectF(0, box.bottom() - 10, left - 3, 12), Qt.AlignRight, f"{lo:.2g}")
        p.drawText(QRectF(left, 1, box.width() / 2, 12), Qt.AlignLeft, "training loss")
        p.setPen(QColor(SCORE))
        p.drawText(QRectF(box.right() + 3, top - 2, right, 12), Qt.AlignLeft, "1")
        p.drawText(QRectF(box.right() + 3, box.bottom() - 10, right, 12), Qt.AlignLeft, "0")
        p.drawText(QRectF(box.center().x(), 1, box.width() / 2, 12), Qt.AlignRight,
                   LABELS.get(self.metric, ""))
        p.setPen(fg)
        p.drawText(QRectF(left, box.bottom() + 2, box.width(), 14), Qt.AlignHCenter,
                   f"step (0 - {xmax})")
