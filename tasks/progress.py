"""A progress hook: the CLI registers a listener, flows report to it (no-op otherwise)."""

from __future__ import annotations

import threading
from collections.abc import Callable

_listener: Callable[[str, int, int], None] | None = None
_lock = threading.Lock()


def set_listener(listener: Callable[[str, int, int], None] | None) -> None:
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
