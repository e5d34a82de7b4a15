"""Flow runs and their log lines read back from the Prefect API (the session's
``prefect_harness`` server): what the UI shows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def run_logs_at_info() -> Iterator[None]:
    """Flow and task run loggers at INFO for the block, as in a ``hagrid`` or served run
    (the tests set ``PREFECT_LOGGING_LEVEL=WARNING`` to keep their console quiet)."""
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def flow_runs(flow_name: str) -> list[Any]:
    """Every flow run of the flow named ``flow_name``."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def run_log_lines(flow_run_id: Any) -> list[str]:
    """The log messages of a flow run (its task runs' included), oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are sent in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC)
    return [log.message for log in logs]
