"""napari-vismae: segment, classify and fine-tune VIS-MAE models on radiology images in napari.

GUI only: every computation is delegated to the ``training`` engine.
"""
__version__ = "0.1.0"
