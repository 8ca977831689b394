"""Progress of long library work (fine-tuning, statistics, iterative rounds, searches) on one stderr line.

    for x, y in progress(batches, "fine-tuning"):            # an iterable: advances by itself
        ...
    with progress(100, "annealing") as bar:                  # a count: advance with update()
        bar.update(score=0.93)                               # i/N and the current score

It draws `desc i/N key=value ... elapsed` on one self-overwriting line, only when stderr is a terminal,
never on stdout; `FXPRUNE_PROGRESS=0` or `enabled=False` silences it and `FXPRUNE_PROGRESS=1` forces it.
A bar inside another (fine-tuning inside a search) erases its line when done; the outermost keeps its last.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["Progress", "progress"]

_depth = 0  # bars open right now; nested ones erase themselves on close


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """One progress line; see `progress`. Iterate it (if built from an iterable) or call `update`."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, enabled: bool | None = None,
                 stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.iterable, self.total, self.desc, self.i = iterable, total, desc, 0
        self.metrics: dict[str, Any] = {}
        self._stream, self._min_interval = stream, min_interval
        self._start = self._last = time.perf_counter()
        self._width = 0
        env = os.environ.get("FXPRUNE_PROGRESS", "").strip()
        if env == "0" or enabled is False:
            self.enabled = False
        elif env == "1" or enabled:
            self.enabled = True
        else:
            isatty = getattr(self.stream, "isatty", None)
            self.enabled = bool(isatty and isatty())

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # looked up late: tests swap stderr

    def __enter__(self) -> Progress:
        global _depth
        _depth += 1
        self._nested = _depth > 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _depth
        _depth -= 1
        self.close()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError(f"progress({self.desc!r}) was given a count, not an iterable: call update() instead")
        with self:
            for item in self.iterable:
                yield item
                self.update()

    def set(self, **metrics: Any) -> None:
        """Show these values (loss, score, ...) on the line without advancing."""
        self.metrics.update(metrics)
        self._draw()

    def update(self, n: int = 1, **metrics: Any) -> None:
        """Advance by `n` steps and show `metrics`."""
        self.i += n
        self.metrics.update(metrics)
        self._draw()

    def close(self) -> None:
        """Draw the final line (or erase it when nested) and end it."""
        if not self.enabled or self._width == 0:
            return
        if getattr(self, "_nested", False):
            self.stream.write("\r" + " " * self._width + "\r")
        else:
            self._draw(force=True)
            self.stream.write("\n")
        self.stream.flush()
        self._width = 0

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self._min_interval and self.i != self.total):
            return
        self._last = now
        count = f"{self.i}/{self.total}" if self.total else str(self.i)
        parts = [self.desc, count, *(f"{k}={_fmt(v)}" for k, v in self.metrics.items()), f"{now - self._start:.1f}s"]
        line = " ".join(parts)
        self.stream.write("\r" + line + " " * max(self._width - len(line), 0))
        self.stream.flush()
        self._width = len(line)


def progress(iterable_or_total: Iterable[Any] | int | None, desc: str, *, enabled: bool | None = None,
             stream: TextIO | None = None) -> Progress:
    """A progress line on stderr for long work; silent unless stderr is a terminal.

    Args:
        iterable_or_total: an iterable to wrap (its `len()` is the total when it has one), or the number of
            steps (None: unknown) when used as a context manager with `update()`.
        desc: what is being done, e.g. "fine-tuning" or "simulated annealing".
        enabled: None follows stderr's `isatty()`; False silences; True draws even when not a terminal.
            The environment variable FXPRUNE_PROGRESS=0 silences in every case, =1 forces it on.
        stream: where to draw (default: `sys.stderr`, looked up at each write).

    Returns:
        A `Progress`: iterate it, or use it in a `with` block and call `update(n, **metrics)` / `set(**metrics)`.
    """
    if iterable_or_total is None or isinstance(iterable_or_total, int):
        return Progress(None, iterable_or_total, desc, enabled, stream)
    total = len(iterable_or_total) if hasattr(iterable_or_total, "__len__") else None
    return Progress(iterable_or_total, total, desc, enabled, stream)
