"""``python -m training.label_efficiency``: the label-efficiency study (the code lives in
:mod:`training.finetune.label_efficiency`)."""
import sys

from training.runtime.threads import configure_threads

if __name__ == "__main__":  # before torch loads: passive OpenMP waiting, --threads or all CPUs
    configure_threads(argv=sys.argv[1:])

from training.finetune.label_efficiency import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
