"""Input data: the one intensity → [0, 1] preprocessing, datasets, augmentation, splits and
synthetic phantoms."""
