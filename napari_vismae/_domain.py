"""Domain guard for the Segment and Classify widgets.

Before a model runs on an image, the image's modality (``layer.metadata["modality"]``)
and body region (DICOM BodyPartExamined, from the headers the reader keeps) are compared
with the model card's domain (:meth:`ModelCard.domain_mismatch`). On a mismatch the widget
shows a warning label and an "apply anyway" checkbox that must be ticked before its button
runs the model: asked in the widget, never in a modal dialog.
"""
from __future__ import annotations

from magicgui.widgets import CheckBox, Label

WARN_STYLE = "color: #ffb000; font-weight: bold;"


def image_domain(layer) -> tuple[str | None, str | None]:
    """(modality, body part) of an image layer, from what our reader puts in its metadata."""
    meta = getattr(layer, "metadata", None) or {}
    modality = meta.get("modality") or None
    body = meta.get("body_part") or None
    if body is None:
        for ds in (meta.get("dicom_headers") or [])[:1]:
            try:
                body = str(ds.get("BodyPartExamined", "") or "") or None
            except Exception:  # noqa: BLE001 - a header we cannot read states nothing
                body = None
    return modality, body


def fit_height(label: Label) -> None:
    """Reserve the height a word-wrapped label needs (in a form layout a wrapped QLabel
    otherwise gets about one line and the rest of its text is cut off)."""
    from qtpy.QtCore import QRect, Qt

    native = label.native
    width = max(native.width(), 240) - 8
    rect = native.fontMetrics().boundingRect(QRect(0, 0, width, 10_000),
                                             int(Qt.TextFlag.TextWordWrap), str(label.value))
    native.setMinimumHeight(rect.height() + 6)


class DomainGuard:
    """A warning label + an "apply anyway" checkbox, shown only on a domain mismatch."""

    def __init__(self):
        self.label = Label(value="", visible=False)
        from qtpy.QtWidgets import QSizePolicy

        self.label.native.setWordWrap(True)
        self.label.native.setMinimumWidth(50)
        self.label.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                        QSizePolicy.Policy.Preferred)
        self.label.native.setStyleSheet(WARN_STYLE)
        self.accept = CheckBox(text="apply anyway", value=False, visible=False)
        self.reason: str | None = None

    @property
    def widgets(self) -> list:
        return [self.label, self.accept]

    def update(self, layer, entry) -> None:
        """Re-check for the current image and model; a new mismatch must be accepted anew."""
        reason = None
        if layer is not None and entry is not None:
            modality, body = image_domain(layer)
            reason = entry.card.domain_mismatch(modality, body)
        if reason != self.reason:
            self.accept.value = False
        self.reason = reason
        if reason:
            self.label.value = (f"⚠ Outside this model's domain: {reason}; its output means "
                                "nothing here. Tick 'apply anyway' to run it regardless.")
            fit_height(self.label)
        self.label.visible = self.accept.visible = bool(reason)

    def blocks(self) -> bool:
        """True when the model must not run yet (a mismatch not accepted)."""
        return bool(self.reason) and not self.accept.value
