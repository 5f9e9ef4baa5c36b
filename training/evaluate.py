"""``python -m training.evaluate``: evaluate a checkpoint; k-fold cross-validation (the code
lives in :mod:`training.finetune.evaluate`)."""
import sys

from training.runtime.threads import configure_threads

if __name__ == "__main__":  # before torch loads: passive OpenMP waiting, --threads or all CPUs
    configure_threads(argv=sys.argv[1:])

from training.finetune.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
