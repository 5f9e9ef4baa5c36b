"""A closed segment table leaves no callbacks behind (the tracking signal is global)."""
import gc

import numpy as np
import pytest

from napari_vismae._segment_table import SegmentTableWidget
from napari_vismae._tracking import events, set_locked_classes

pytestmark = pytest.mark.gui


def test_closed_table_is_disconnected(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((2, 8, 8), np.uint8), name="l")
    before = len(events.changed)
    w = SegmentTableWidget(viewer)
    dock = viewer.window.add_dock_widget(w)
    assert len(events.changed) == before + 1
    viewer.window.remove_dock_widget(dock)
    w.close()
    w.deleteLater()
    qtbot.wait(50)
    del w, dock
    gc.collect()
    qtbot.wait(50)
    set_locked_classes(labels, [1])  # must not reach the deleted widget
    assert len(events.changed) == before
