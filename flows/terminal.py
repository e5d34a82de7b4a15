"""What the ``hagrid`` command does to Prefect so that a terminal shows the CLI's own lines.

- Prefect's temporary server (ephemeral mode, no ``PREFECT_API_URL``) is started before a
  progress bar is drawn, so the bar does not sit at ``0/?`` while it starts, and a server
  that does not come up is one line with what to do (``PrefectUnavailable``).
- A failing flow run logs its error with a traceback to the console (and to the API, for
  the UI); a flow logs warnings the CLI's summary repeats. The console copies of the flow
  and task run records from WARNING up are held back: an error the CLI reports itself in
  one ``error:`` line drops the held errors (``drop_held_errors``), a warning it prints
  drops the same held warning (``drop_held_warning``), and the rest is shown when the
  command ends (``release_held``, which stops holding). The API copy is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOGGERS: tuple[str, ...] = ("prefect.flow_runs", "prefect.task_runs")
SERVICE_WORKERS: tuple[str, ...] = ("EventsWorker", "APILogWorker")
DRAINING = "Still processing items"
STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


class PrefectUnavailable(RuntimeError):
    """Prefect's temporary server did not start; the message says what to do instead."""


class HeldRunRecords(logging.Filter):
    """A console handler filter that keeps flow and task run warnings and errors back."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and record.name.startswith(RUN_LOGGERS):
            self.held.append(record)
            return False
        return True


class DrainingNoise(logging.Filter):
    """Drops "Still processing items" of Prefect's background senders (events, logs): they
    finish their queues at exit, after the command's own last line, on a busy machine."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.endswith(SERVICE_WORKERS)
                    and record.getMessage().startswith(DRAINING))


_HOLD = HeldRunRecords()
_HOLDING: list[logging.Handler] = []  # the console handlers _HOLD filters now
_QUIET = DrainingNoise()  # stays on the console handlers for the whole process


def hold_run_records() -> None:
    """Hold flow and task run warnings and errors back from Prefect's console handler
    (idempotent)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and handler not in _HOLDING:
            handler.addFilter(_HOLD)
            handler.addFilter(_QUIET)  # never removed: the senders drain at exit
            _HOLDING.append(handler)


def drop_held_errors() -> None:
    """Forget the held errors: the CLI told the error itself."""
    _HOLD.held[:] = [r for r in _HOLD.held if r.levelno < logging.ERROR]


def drop_held_warning(text: str) -> None:
    """Forget the held warnings that say ``text``: the CLI printed it."""
    _HOLD.held[:] = [r for r in _HOLD.held
                     if r.levelno >= logging.ERROR or r.getMessage() != text]


def release_held() -> None:
    """Stop holding, and show what is still held on the console (warnings the CLI did not
    repeat, a failure it did not expect)."""
    records, _HOLD.held[:] = list(_HOLD.held), []
    for handler in _HOLDING:
        handler.removeFilter(_HOLD)
        for record in records:
            if handler.level <= record.levelno:
                handler.emit(record)
    _HOLDING.clear()


def temporary_server_needed() -> bool:
    """Whether flow runs here need Prefect's temporary server: no ``PREFECT_API_URL`` and
    ephemeral mode on (Prefect's own rule)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


@contextmanager
def no_heartbeats_on_a_temporary_server() -> Iterator[None]:
    """Flow runs in the block send no heartbeats when they use Prefect's temporary server.

    Heartbeats (every 180 s) let a server notice a run whose process died; a temporary
    server dies with that process, so they tell it nothing. Their thread sleeps in whole
    seconds and is joined when the run ends, which held every flow run's end back by up to
    a second (`bench/RESULTS.md`). With a configured server (``PREFECT_API_URL``) they stay.
    """
    if not temporary_server_needed():
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def server_log() -> Path:
    """Where the temporary server started by ``hagrid`` writes its output (appended):
    ``temporary-server.log`` in ``PREFECT_HOME``."""
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "temporary-server.log"


def start_temporary_server() -> None:
    """Start Prefect's temporary server now (flow runs then use it); raises
    ``PrefectUnavailable`` with what to do when it does not come up."""
    import httpx
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    timeout_s = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    try:
        SubprocessASGIServer().start()
    except (RuntimeError, httpx.HTTPError) as exc:
        first = str(exc).split(". ")[0].rstrip(".")
        raise PrefectUnavailable(
            f"Prefect's temporary server did not start ({first}). Start a server "
            "(prefect server start) and set PREFECT_API_URL=http://127.0.0.1:4200/api, or "
            f"give it longer: {STARTUP_TIMEOUT_SETTING}={max(60, 3 * timeout_s)} (now "
            f"{timeout_s}); its output is in {server_log()}") from None
