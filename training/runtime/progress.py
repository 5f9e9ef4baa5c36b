"""Progress for long commands: a tqdm bar on a terminal, plain log lines everywhere else.

Under ``nohup``, a batch scheduler or ``| tee`` a progress bar writes nothing useful (tqdm
disables itself, or fills the log with carriage returns); :class:`Progress` then logs one line
per ``every`` seconds (and at the end) instead, so cluster logs show how a run is going.
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("training.progress")


def is_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """``update(n, **fields)`` then ``close()``; ``enabled=False`` silences it entirely."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0,
                 every: float = 30.0, enabled: bool = True, logger: logging.Logger | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.enabled = every, enabled
        self.log = logger or log
        self.fields: dict = {}
        self.bar = None
        self.t0 = self.t_last = time.perf_counter()
        self.n0 = initial
        if enabled and is_terminal():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            dynamic_ncols=True)
        elif enabled:
            self.log.info("%s: %d %ss to go%s", desc, total - initial, unit,
                          f" (resuming at {initial})" if initial else "")

    @property
    def plain(self) -> bool:
        return self.enabled and self.bar is None

    def update(self, n: int = 1, **fields) -> None:
        self.n += n
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix({k: _fmt(v) for k, v in fields.items()}, refresh=False)
        elif self.plain and time.perf_counter() - self.t_last >= self.every:
            self.line()

    def line(self) -> None:
        """Log the current state as one plain line."""
        now = time.perf_counter()
        rate = (self.n - self.n0) / max(now - self.t0, 1e-9)
        extra = "".join(f" {k} {_fmt(v)}" for k, v in self.fields.items())
        self.log.info("%s: %d/%d %s (%.2f %s/s)%s", self.desc, self.n, self.total, self.unit,
                      rate, self.unit, extra)
        self.t_last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.plain and self.n > self.n0:
            self.line()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ensure_logging(level: int = logging.INFO) -> None:
    """Plain ``LEVEL name: message`` lines on stderr unless the program configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
