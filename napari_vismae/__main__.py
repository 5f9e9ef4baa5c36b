"""``napari-vismae`` / ``python -m napari_vismae``.

    napari-vismae demo [--screenshot PATH]   open napari, load the sample study, segment it
    napari-vismae headless-demo [...]        the same models without a GUI (training.interactive.demo)
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "demo"
    if command == "demo":
        from ._demo import main as demo
        return demo(argv)
    if command == "headless-demo":
        from training.interactive.demo import main as headless
        return headless(argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
