"""``python -m training.pretrain``: MAE pretraining on one GPU, many GPUs (torchrun) or the CPU."""
import sys

from training.runtime.threads import configure_threads

if __name__ == "__main__":  # before torch loads: passive OpenMP waiting, --threads or all CPUs
    configure_threads(argv=sys.argv[1:])

from training.pretrain.loop import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
