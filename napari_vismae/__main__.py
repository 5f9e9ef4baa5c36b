"""``napari-vismae`` / ``python -m napari_vismae``.

usage: napari-vismae [COMMAND] [OPTIONS]

commands:
  demo            (default) open napari with the sample CT study and segment it with the
                  built-in model; --screenshot PATH saves a screenshot and quits. Needs a
                  display: on a headless machine run `xvfb-run -a napari-vismae demo
                  --screenshot out.png`
  headless-demo   no GUI: run a built-in model (--model abdomen-organs | liver-lesion | a
                  checkpoint folder) on the sample study and write labels, an overlay PNG and
                  the Dice per class

`napari-vismae COMMAND --help` lists a command's options.
"""
from training.runtime.threads import configure_threads; configure_threads()  # noqa: E702, I001  (before torch loads)

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

COMMANDS = ("demo", "headless-demo")
NO_DISPLAY = ("napari-vismae demo needs a display, and none was found ($DISPLAY and "
              "$WAYLAND_DISPLAY are unset). On a headless machine run\n"
              "    xvfb-run -a napari-vismae demo --screenshot out.png\n"
              "(Debian/Ubuntu: apt-get install xvfb xauth plus the X libraries listed in the "
              "README), or `napari-vismae headless-demo` for the models without a GUI.")


def has_display() -> bool:
    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM", "").startswith(
            ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "demo"
    if command == "demo":
        if not has_display() and not {"-h", "--help"} & set(argv):
            print(NO_DISPLAY, file=sys.stderr)
            return 2
        from ._demo import main as demo
        return demo(argv)
    if command == "headless-demo":
        from training.interactive.demo import main as headless
        return headless(argv, models_dir=Path(__file__).parent / "models")
    print(f"napari-vismae: unknown command {command!r} (choose from {', '.join(COMMANDS)})\n"
          + __doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
