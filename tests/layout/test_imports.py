"""The layout's promises: stage packages import only downwards, no cycles, no Qt in the engine,
and the plugin uses only the engine's public doors."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower number = lower stage. A module may import its own package or a strictly lower stage.
STAGES = {"runtime": 0, "models": 1, "io": 1, "data": 2, "weights": 3, "pretrain": 4,
          "finetune": 4, "interactive": 5}
CLI_SHIMS = {"prepare", "evaluate", "label_efficiency"}  # ``python -m training.X`` entry points
PLUGIN_DOORS = ("training.interactive", "training.weights", "training.io", "training.data",
                "training.runtime.threads")  # the thread defaults, set before torch loads


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, package_prefix: str = "training") -> set[str]:
    """Every ``training.*`` module imported anywhere in the file (lazy imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    base = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m == package_prefix or m.startswith(package_prefix + ".")}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "training").rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in files and i != m} for m, p in files.items()}


def stage_of(mod: str) -> tuple[str, int] | None:
    parts = mod.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in CLI_SHIMS:
        return parts[1], 99
    return parts[1], STAGES.get(parts[1], -1)


def test_every_module_belongs_to_a_stage():
    loose = [m for m in graph() if m.count(".") == 1 and m.split(".")[1] not in STAGES
             and m.split(".")[1] not in CLI_SHIMS]
    assert not loose, f"modules outside the stage packages: {loose}"


def test_no_import_cycles():
    g = graph()
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        seen[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            # a package's __init__ importing its own modules is not a cycle worth flagging
            if seen.get(n) == 1 and not m.startswith(n + "."):
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(g):
        if m not in seen:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_run_downwards():
    wrong = []
    for m, deps in graph().items():
        s = stage_of(m)
        if s is None:
            continue
        for d in deps:
            t = stage_of(d)
            if t is None or t[0] == s[0]:
                continue
            if t[1] >= s[1]:
                wrong.append(f"{m} ({s[0]}) imports {d} ({t[0]})")
    assert not wrong, "imports running up or sideways:\n" + "\n".join(sorted(wrong))


def test_plugin_uses_only_the_public_doors():
    wrong = []
    for p in (ROOT / "napari_vismae").rglob("*.py"):
        for mod in imports_of(p):
            if mod != "training" and not mod.startswith(PLUGIN_DOORS):
                wrong.append(f"{p.relative_to(ROOT)}: {mod}")
    assert not wrong, "the plugin imports engine internals:\n" + "\n".join(sorted(wrong))


@pytest.mark.slow
def test_engine_imports_no_gui_toolkit():
    pkgs = sorted(m for m in graph() if not m.endswith("__main__"))  # every module and package
    code = ("import sys\n" + "".join(f"import {m}\n" for m in pkgs) +
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'magicgui', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy',"
            " 'superqt', 'triton'))\nprint(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing the engine loaded GUI modules: {out.stdout}"
