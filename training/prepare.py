"""``python -m training.prepare``: turn a tree of DICOM / NIfTI / 2-D images into pretraining
shards (the code lives in :mod:`training.pretrain.prepare`)."""
import sys

from training.runtime.threads import configure_threads

if __name__ == "__main__":  # before torch loads: passive OpenMP waiting, --threads or all CPUs
    configure_threads(argv=sys.argv[1:])

from training.pretrain.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
