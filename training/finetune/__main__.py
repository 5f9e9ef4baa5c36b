"""``python -m training.finetune``: fine-tune VIS-MAE for segmentation or classification."""
import sys

from training.finetune.cli import main

if __name__ == "__main__":
    sys.exit(main())
