"""``python -m training.evaluate``: evaluate a checkpoint; k-fold cross-validation (the code lives in :mod:`training.finetune.evaluate`)."""
import sys

from training.finetune.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
