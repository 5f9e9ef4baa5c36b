"""``python -m training.prepare``: turn a tree of DICOM / NIfTI / 2-D images into pretraining shards (the code lives in :mod:`training.pretrain.prepare`)."""
import sys

from training.pretrain.prepare import main

if __name__ == "__main__":
    sys.exit(main())
