"""The lineage's versions: Make active (a rollback is just this) and Export."""
from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, PushButton

from training.interactive.session import lineage_for
from training.weights.versions import VersionStore

from .._models import events, get_store
from .common import narrow, notify


class VersionsView:
    def __init__(self, w):
        self.w = w
        self.versions = narrow(ComboBox(label="versions", choices=self._choices))
        self.activate = PushButton(text="Make active (rollback)")
        self.export = PushButton(text="Export...")
        self.activate.changed.connect(lambda *_: self.make_active())
        self.export.changed.connect(lambda *_: self.export_version())

    @property
    def widgets(self) -> list:
        return [self.versions, self.activate, self.export]

    def store(self) -> VersionStore:
        return VersionStore(get_store().user_dir)

    def lineage(self) -> str | None:
        entry = self.w.model_entry()
        return lineage_for(entry, self.store()) if entry is not None else None

    def _choices(self, _widget=None):
        """(label, entry) per version of the base model's lineage (a callable: it survives
        napari's reset_choices)."""
        lineage = self.lineage()
        vs = self.store()
        if not lineage:
            return []
        active = vs.active(lineage)
        out = []
        for v in vs.versions(lineage):
            prov = v.card.provenance
            m = prov.get("metrics", {})
            best = m.get("best")
            tag = f" {m.get('selection')} {best:.3f}" if isinstance(best, float) else \
                " (base)" if not m else " (not validated)"
            mark = "  [active]" if active is not None and v.path == active.path else ""
            status = " stopped" if prov.get("status") == "stopped" else ""
            worse = " worse" if m.get("judged_worse") else ""
            out.append((f"{v.path.name}{tag}{status}{worse}{mark}", v))
        return out

    def refresh(self, select: str | Path | None = None) -> None:
        """Re-read the versions; select ``select`` (a version folder) or the active one."""
        self.versions.reset_choices()
        choices = [v for v in self.versions.choices if v is not None]
        lineage = self.lineage()
        active = self.store().active(lineage) if lineage else None
        want = Path(select).resolve() if select else active.path.resolve() if active else None
        match = [v for v in choices if want is not None and v.path.resolve() == want]
        if match:
            self.versions.value = match[0]

    def names(self) -> list[str]:
        return [v.path.name for v in self.versions.choices if v is not None]

    def make_active(self, version: str | None = None) -> None:
        """Make the selected (or named) version active."""
        choices = [v for v in self.versions.choices if v is not None]
        entry = self.versions.value if version is None else next(
            (v for v in choices if v.path.name == version), None)
        if entry is None:
            notify("info", "VIS-MAE: no version selected")
            return
        self.store().set_active(entry.path.parent.name, entry.path.name)
        events.models_changed.emit()
        self.w.select_model(entry.path)
        self.refresh(entry.path)
        self.w.set_status(f"{entry.path.name} of {entry.card.name} is now active")

    def export_version(self, destination=None):
        """Copy the selected version to ``destination`` (a file dialog if None)."""
        entry = self.versions.value
        if entry is None:
            notify("info", "VIS-MAE: no version selected")
            return None
        if destination is None:
            from qtpy.QtWidgets import QFileDialog

            destination, _ = QFileDialog.getSaveFileName(
                self.w.native, "Export model version",
                f"{entry.card.name.replace(' ', '-')}-{entry.path.name}")
            if not destination:
                return None
        try:
            out = VersionStore.export(entry, Path(destination))
        except (OSError, ValueError) as e:
            notify("error", f"VIS-MAE: could not export to {destination}: {e}")
            return None
        self.w.set_status(f"exported {entry.path.name} of {entry.card.name} to {out}")
        return out
