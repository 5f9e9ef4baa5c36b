"""``python -m training.pretrain``: MAE pretraining on one GPU, many GPUs (torchrun) or the CPU."""
import sys

from training.pretrain.loop import main

if __name__ == "__main__":
    sys.exit(main())
