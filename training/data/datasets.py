"""Fine-tuning datasets: a CSV of files, folders of volumes, or in-memory arrays.

Every dataset yields :class:`SliceSample` objects (one 2-D image with raw
intensities, its mask or class label, modality and window), and every sample
goes through the same :func:`prepare_sample`, which applies
:func:`training.data.preprocessing.scale_to_unit` and the model-card resize: the
preprocessing used in pretraining and inference. Items are
``(image (1, S, S) float32 in [0, 1], target)`` with ``S = prep.input_size``;
the target is a (S, S) int64 mask (nearest-neighbour resized) or a scalar
int64 class (-1 when unlabelled). Standardisation (mean/std) happens in the
training loop after augmentation (:func:`training.data.preprocessing.to_model_input`).

Sources:

* :class:`CSVDataset`: the official layout, columns ``image,mask`` or
  ``image,label`` (``{train,val,test}_fold{N}.csv``, optionally prefixed by a
  data percentage; see :func:`fold_csv_paths`).
* :class:`VolumeFolderDataset`: NIfTI files or DICOM series folders with label
  volumes of the same name, sliced along z.
* :class:`ArrayDataset`: numpy arrays (what the napari plugin passes).
"""
from __future__ import annotations

from training.data.file_datasets import (  # noqa: F401 - the public names live here
    IMAGE_EXTS,
    NEGATIVE_WORDS,
    NIFTI_EXTS,
    POSITIVE_WORDS,
    CSVDataset,
    VolumeFolderDataset,
    fold_csv_paths,
    parse_label,
    read_slice_file,
)
from training.data.slice_datasets import (  # noqa: F401
    TASKS,
    ArrayDataset,
    DataError,
    SliceDataset,
    SliceSample,
    SubsetDataset,
    prepare_sample,
    resize_mask,
    resize_unit,
)
