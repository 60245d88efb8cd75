"""Progress on a terminal for steps that may take more than a second, silence elsewhere.

:func:`progress` is a context manager yielding a :class:`Progress` with ``advance()``
and ``note()``. On a terminal it draws with tqdm when installed, else with rich,
else with a small spinner on standard error that keeps turning while the work runs
(a single long SymPy call shows life too). When standard error is not a terminal
(a pipe, CI, a notebook's captured stream) or with ``quiet=True`` it draws nothing.

Examples
--------
>>> with progress("scalar derivation", total=3, quiet=True) as bar:
...     for _ in range(3):
...         bar.advance()
>>> bar.done
3
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

#: Environment-free switch used by the CLI's ``--quiet``; ``set_quiet(True)`` silences all.
_QUIET = False
SPINNER = "|/-\\"
TICK = 0.1


def quiet_now() -> bool:
    """Whether :func:`set_quiet` has silenced every display."""
    return _QUIET


def set_quiet(quiet: bool) -> None:
    """Silence (or allow) every progress display of this process."""
    global _QUIET
    _QUIET = bool(quiet)


def backend(stream: TextIO | None = None, quiet: bool = False) -> str:
    """Which display :func:`progress` would use: tqdm, rich, spinner or none."""
    stream = sys.stderr if stream is None else stream
    if quiet or _QUIET or not getattr(stream, "isatty", lambda: False)():
        return "none"
    for name in ("tqdm", "rich"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "spinner"


class Progress:
    """Counts finished units of work and shows them through one display backend."""

    def __init__(self, label: str, total: int | None, stream: TextIO, kind: str) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.kind = kind
        self._stream = stream
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._note = ""
        self._lock = threading.Lock()
        #: Seconds the step took, set when the ``progress`` block ends.
        self.elapsed = 0.0

    def start(self) -> None:
        """Begin drawing (nothing for ``none``)."""
        if self.kind == "tqdm":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.label, file=self._stream, leave=False)
        elif self.kind == "rich":
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(console=Console(file=self._stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        elif self.kind == "spinner":
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()

    def advance(self, steps: int = 1) -> None:
        """Record ``steps`` more finished units."""
        with self._lock:
            self.done += steps
        if self.kind == "tqdm":
            self._bar.update(steps)
        elif self.kind == "rich":
            self._bar.advance(self._task, steps)

    def note(self, text: str) -> None:
        """Show a short word about the current unit (e.g. the layer being derived)."""
        self._note = text
        if self.kind == "tqdm":
            self._bar.set_postfix_str(text, refresh=False)
        elif self.kind == "rich":
            self._bar.update(self._task, description=f"{self.label} {text}")

    def _line(self, frame: str) -> str:
        count = f" {self.done}/{self.total}" if self.total else ""
        note = f" {self._note}" if self._note else ""
        return f"\r{frame} {self.label}{count}{note}\033[K"

    def _spin(self) -> None:
        i = 0
        while not self._stop.wait(TICK):
            self._stream.write(self._line(SPINNER[i % len(SPINNER)]))
            self._stream.flush()
            i += 1

    def finish(self) -> None:
        """Stop drawing and clear the line."""
        if self.kind == "tqdm":
            self._bar.close()
        elif self.kind == "rich":
            self._bar.stop()
        elif self.kind == "spinner" and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._stream.write("\r\033[K")
            self._stream.flush()


@contextlib.contextmanager
def progress(
    label: str,
    total: int | None = None,
    *,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> Iterator[Progress]:
    """Show progress of a possibly slow step on a terminal; see the module docstring."""
    stream = sys.stderr if stream is None else stream
    bar = Progress(label, total, stream, backend(stream, quiet))
    bar.start()
    started = time.monotonic()
    try:
        yield bar
    finally:
        bar.finish()
        bar.elapsed = time.monotonic() - started


def track(items: Any, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> Iterator:
    """Iterate over ``items`` with progress (like ``tqdm(items)``), one unit per item."""
    total = len(items) if hasattr(items, "__len__") else None
    with progress(label, total, quiet=quiet, stream=stream) as bar:
        for item in items:
            yield item
            bar.advance()


def stage_printer(
    *, quiet: bool = False, stream: TextIO | None = None
) -> Callable[[str, int, int], None] | None:
    """A ``progress(stage, done, total)`` callback for long loops, or None when silent.

    The callback form suits code that reports from deep inside (e.g. per parameter of
    the scalar derivation): each new ``stage`` name starts a new display, and reaching
    ``done == total`` ends it. Returns None off a terminal or when quiet, so callers can
    skip the reporting entirely.
    """
    stream = sys.stderr if stream is None else stream
    kind = backend(stream, quiet)
    if kind == "none":
        return None
    state: dict[str, Any] = {"stage": None, "bar": None}

    def report(stage: str, done: int, total: int) -> None:
        if state["stage"] != stage:
            if state["bar"] is not None:
                state["bar"].finish()
            state["stage"] = stage
            state["bar"] = Progress(stage, total, stream, kind)
            state["bar"].start()
        bar = state["bar"]
        if done > bar.done:
            bar.advance(done - bar.done)
        if done >= total:
            bar.finish()
            state["stage"] = state["bar"] = None

    return report
