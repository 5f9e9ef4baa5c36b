"""Window/level widget: CT presets, the DICOM header window, modality-aware defaults.

CT presets are only offered for CT layers; MR/US/X-ray get the header window
(if any) and a robust percentile window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label

from training.io.windowing import (
    limits_to_window,
    presets_for_modality,
    robust_limits,
    window_to_limits,
)

if TYPE_CHECKING:
    import napari

HEADER = "Header window"
AUTO = "Auto (0.5-99.5 %)"
CUSTOM = "Custom"


def layer_modality(layer) -> str:
    return str((layer.metadata or {}).get("modality", "") or "").upper()


def presets_for_layer(layer) -> dict[str, tuple[float, float]]:
    """Named (center, width) windows that apply to ``layer``."""
    out: dict[str, tuple[float, float]] = {}
    header = (layer.metadata or {}).get("window")
    if header is not None:
        out[HEADER] = (float(header[0]), float(header[1]))
    out.update(presets_for_modality(layer_modality(layer)))
    out[AUTO] = limits_to_window(
        *robust_limits(layer.data if not hasattr(layer.data, "levels") else layer.data[-1])
    )
    return out


def apply_window(layer, center: float, width: float) -> None:
    """Show ``layer`` through the window (center, width)."""
    lo, hi = window_to_limits(center, max(float(width), 1e-6))
    rng = list(layer.contrast_limits_range)
    if lo < rng[0] or hi > rng[1]:
        layer.contrast_limits_range = [min(lo, rng[0]), max(hi, rng[1])]
    layer.contrast_limits = [lo, hi]


class WindowLevelWidget(Container):
    """Pick an image layer, a preset, or type level/width; changes apply immediately."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self._viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._updating = False
        self._presets_cache: tuple | None = None
        self._layer_box = ComboBox(label="Image", choices=self._image_layers)
        # callable choices: napari's reset_choices() (on every layer insert/remove/rename)
        # recomputes them from the selected layer instead of wiping them
        self._preset_box = ComboBox(label="Preset", choices=self._preset_choices)
        self._center = FloatSpinBox(label="Level", min=-1e7, max=1e7, step=1.0)
        self._width = FloatSpinBox(label="Window", min=1e-3, max=1e7, step=1.0, value=400.0)
        self._info = Label(value="")
        self._info.native.setWordWrap(True)
        super().__init__(
            widgets=[self._layer_box, self._preset_box, self._center, self._width, self._info]
        )
        self._layer_box.changed.connect(self._on_layer)
        self._preset_box.changed.connect(self._on_preset)
        self._center.changed.connect(self._on_values)
        self._width.changed.connect(self._on_values)
        for ev in (self._viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._refresh_layers)
        self._on_layer(self._layer_box.value)

    # -- helpers -------------------------------------------------------------------
    def _image_layers(self, _widget=None):
        return [
            (ly.name, ly)
            for ly in self._viewer.layers
            if ly.__class__.__name__ == "Image" and not getattr(ly, "rgb", False)
        ]

    def _preset_choices(self, _widget=None) -> list[str]:
        box = getattr(self, "_layer_box", None)
        layer = box.value if box is not None else None
        return [*self._presets_of(layer), CUSTOM] if layer is not None else [CUSTOM]

    def _presets_of(self, layer) -> dict[str, tuple[float, float]]:
        """``presets_for_layer``, computed once per layer (the robust window reads the data)."""
        if layer is None:
            return {}
        key = (id(layer), id(layer.data), layer_modality(layer))
        if self._presets_cache is None or self._presets_cache[0] != key:
            self._presets_cache = (key, presets_for_layer(layer))
        return self._presets_cache[1]

    def _refresh_layers(self, _event=None):
        before = self._layer_box.value
        self._layer_box.reset_choices()
        if self._layer_box.value is not None and self._layer_box.value is not before:
            self._on_layer(self._layer_box.value)
        else:
            self._keep_preset(self._preset_box.reset_choices)

    def _keep_preset(self, fn):
        value = self._preset_box.value
        self._updating = True
        try:
            fn()
            if value in self._preset_box.choices:
                self._preset_box.value = value
        finally:
            self._updating = False

    def reset_choices(self, *_):
        """napari calls this on every layer insert/remove/rename: keep layer and preset."""
        before = self._layer_box.value
        self._layer_box.reset_choices()
        if self._layer_box.value is not before:
            self._on_layer(self._layer_box.value)
        else:
            self._keep_preset(self._preset_box.reset_choices)

    @property
    def layer(self):
        return self._layer_box.value

    @property
    def presets(self) -> dict[str, tuple[float, float]]:
        return self._presets_of(self.layer)

    # -- callbacks -----------------------------------------------------------------
    def _on_layer(self, layer):
        if layer is None:
            self._keep_preset(self._preset_box.reset_choices)
            self._info.value = ""
            return
        self._updating = True
        try:
            self._preset_box.reset_choices()
            c, w = limits_to_window(*layer.contrast_limits)
            self._center.value, self._width.value = c, max(w, 1e-3)
            self._preset_box.value = CUSTOM
            mod = layer_modality(layer) or "unknown modality"
            self._info.value = f"{mod}" + (" (HU)" if mod == "CT" else "")
        finally:
            self._updating = False

    def _on_preset(self, name):
        if self._updating or self.layer is None or name == CUSTOM:
            return
        c, w = self.presets[name]
        self.set_window(c, w, preset=name)

    def _on_values(self, _value=None):
        if self._updating or self.layer is None:
            return
        apply_window(self.layer, self._center.value, self._width.value)
        self._updating = True
        try:
            self._preset_box.value = CUSTOM
        finally:
            self._updating = False

    def set_window(self, center: float, width: float, preset: str | None = None) -> None:
        """Apply a window to the selected layer and show it in the controls."""
        if self.layer is None:
            return
        self._updating = True
        try:
            self._center.value, self._width.value = float(center), float(width)
            if preset is not None:
                self._preset_box.value = preset
        finally:
            self._updating = False
        apply_window(self.layer, center, width)
