"""The engine behind the napari plugin: inference, corrections, few-shot fine-tune sessions,
active learning, autosave.

The plugin imports only this package, :mod:`training.weights`, :mod:`training.io` and
:mod:`training.data`.
"""

# Slices per batch for inference on CPU, chosen by measurement (CPU-seconds per slice and
# peak memory at batch 1/2/4/8, built-in and paper-size models: ``python -m
# benchmarks.bench_models --cpu-batch``, docs/performance.md). Here, torch-free, so that
# the napari widgets can show it without importing torch on the GUI thread.
CPU_BATCH = 4
