"""napari-vismae: segment, classify and fine-tune VIS-MAE models on radiology images in napari.

GUI only: every computation is delegated to the ``training`` engine.
"""
from training.runtime.threads import configure_threads

configure_threads()  # before torch loads: the plugin's worker threads wait passively, never spin

__version__ = "0.1.0"
