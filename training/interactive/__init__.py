"""The engine behind the napari plugin: inference, corrections, few-shot fine-tune sessions,
active learning, autosave.

The plugin imports only this package, :mod:`training.weights`, :mod:`training.io` and
:mod:`training.data`.
"""
