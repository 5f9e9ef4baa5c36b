"""napari-vismae training engine: VIS-MAE models, data, losses, loops and checkpoints.

Importable without Qt or napari.
"""
__version__ = "0.1.0"
