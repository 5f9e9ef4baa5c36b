"""Shared fixtures. Tests never touch the network and run on CPU."""
from __future__ import annotations

import os
from pathlib import Path

from training.runtime.threads import configure_threads

# Before anything imports torch: OpenMP threads wait passively (spinning threads made the suite
# up to 40x slower on a CPU shared with other jobs) and use the CPUs this process may use.
THREADS = configure_threads()

import pytest  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCE = Path(os.environ.get("NAPARI_VISMAE_REFERENCE") or
                 Path(__file__).resolve().parents[1].parent / "shared" / "reference")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_reference(path: Path, ci: bool) -> Path:
    """``path`` if it is a folder; else fail (in CI) or skip (elsewhere) with the reason."""
    if not path.is_dir():
        msg = (f"needs the official VIS-MAE reference artifacts in {path} "
               "(../shared/reference beside the repository)")
        if ci:
            pytest.fail(f"CI=true but the reference folder is missing: {msg}", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` beside the repository (or ``$NAPARI_VISMAE_REFERENCE``): the
    official VIS-MAE artifacts. In CI (``CI=true``) a missing folder is a failure; elsewhere
    the test is skipped, saying why."""
    return require_reference(REFERENCE, in_ci())


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the suite's thread count (a test may change it)."""
    import torch
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)
    yield


# -- GUI test files run alone ----------------------------------------------------------------------
# Import order hides crashes (triton beside Mesa's GL segfaulted napari only when nothing earlier
# had imported it), so when the whole suite runs, every GUI test file runs in a fresh process of
# its own (tests/test_gui_isolated.py) and its tests are deselected here. Running a file or a
# folder directly still runs its GUI tests in this process.
GUI_RUNNER = "test_gui_isolated.py"
GUI_CHILD_ENV = "NAPARI_VISMAE_GUI_CHILD"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(GUI_CHILD_ENV) == "1":
        return
    if not any(item.path.name == GUI_RUNNER for item in items):
        return
    gui = [i for i in items if i.get_closest_marker("gui") and i.path.name != GUI_RUNNER]
    if gui:
        config.hook.pytest_deselected(items=gui)
        keep = set(map(id, gui))
        items[:] = [i for i in items if id(i) not in keep]


# -- GUI stall limits on a shared CPU ------------------------------------------------------------
def load_factor(cap: float = 4.0) -> float:
    """How much slower wall-clock timings are than on a quiet machine: the 1-minute load
    average per CPU, at least 1 (a quiet CI runner) and at most ``cap``. Stall limits are
    multiplied by it, so a test still fails on the multi-second freezes it guards against
    but not because other jobs share the CPU."""
    try:
        per_cpu = os.getloadavg()[0] / max(1, os.cpu_count() or 1)
    except OSError:
        return 1.0
    return float(min(cap, max(1.0, per_cpu)))
