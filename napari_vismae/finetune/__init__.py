"""Correct, then fine-tune: the Fine-tune dock widget, one small view per concern.

* :mod:`.study` - the image, the labels layer holding its corrections (by default the
  latest prediction of that image), corrected slices (:mod:`napari_vismae._tracking`),
  classification tags;
* :mod:`.autosave` - autosave off the GUI thread, and Restore after a crash;
* :mod:`.run` - the training controls; a run is a spawned child process
  (:mod:`training.interactive.finetune`), so napari survives whatever happens to it;
* :mod:`.plot` - the live loss / Dice plot in napari's theme;
* :mod:`.versions` - the lineage's versions: Make active (rollback), Export;
* :mod:`.uncertain` - Next uncertain slice, and re-segmenting the current slice.
"""
from .widget import FinetuneWidget

__all__ = ["FinetuneWidget"]
