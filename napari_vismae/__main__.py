"""``napari-vismae`` / ``python -m napari_vismae``: command-line entry point."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from training.demo import main as demo_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        argv = argv[1:]
    return demo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
