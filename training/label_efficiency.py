"""``python -m training.label_efficiency``: the label-efficiency study (the code lives in :mod:`training.finetune.label_efficiency`)."""
import sys

from training.finetune.label_efficiency import main

if __name__ == "__main__":
    sys.exit(main())
