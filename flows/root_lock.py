"""The writer lock as the flows take it: one run writes to a dataset root at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from tasks.integrity import exclusive_writer
from tasks.storage import Storage


@contextmanager
def locked_root(root: Storage, *, command: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``root``'s writer lock for the block, logging what a dead run left and was removed.

    Raises ``tasks.lock.RootLocked`` (who holds it, since when) when another run holds the
    lock for longer than ``wait_s`` seconds.
    """
    with exclusive_writer(root, command=command, wait_s=wait_s) as debris:
        for kind, keys in debris.items():
            if keys:
                _logger().warning("removed %d %s left by a run that died: %s",
                                         len(keys), kind.replace("_", " "),
                                         ", ".join(keys[:5]))
        yield


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()  # type: ignore[return-value]
    except MissingContextError:  # called outside a flow (hagrid aggregate, golden, check)
        return logging.getLogger("hagrid")
