"""A progress hook: the CLI registers a listener, flows report to it (no-op otherwise).

A flow can have a block's reports heard by a listener of its own as well (``listening``),
e.g. one that writes a run-log line now and then (``at_most_every``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]  # listener(stage, done, total)

_listener: Listener | None = None
_lock = threading.Lock()


def set_listener(listener: Listener | None) -> None:
    """Install (or remove, with None) the function called as ``listener(stage, done, total)``."""
    global _listener
    with _lock:
        _listener = listener


def report(stage: str, done: int, total: int) -> None:
    """Tell the listener, if any, that ``done`` of ``total`` items of ``stage`` are finished."""
    with _lock:
        listener = _listener
    if listener is not None:
        listener(stage, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """``listener`` hears every report of the block too, after the installed listener (the
    CLI's bars); the installed one is back in place after the block."""
    with _lock:
        installed = _listener

    def both(stage: str, done: int, total: int) -> None:
        if installed is not None:
            installed(stage, done, total)
        listener(stage, done, total)

    set_listener(both)
    try:
        yield
    finally:
        set_listener(installed)


def at_most_every(seconds: float, listener: Listener, *,
                  clock: Callable[[], float] = time.monotonic) -> Listener:
    """``listener`` told of a report only when ``seconds`` have passed since the first report
    or since the last one it was told of, and never of a finished stage (``done == total``:
    the stage's own summary says that)."""
    last: float | None = None

    def throttled(stage: str, done: int, total: int) -> None:
        nonlocal last
        now = clock()
        if last is None:
            last = now
        elif now - last >= seconds and done < total:
            last = now
            listener(stage, done, total)

    return throttled
