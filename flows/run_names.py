"""Flow run names that say what a run does (``ingest batch-07``, ``publish v2``,
``train v2``) instead of Prefect's random ones, for the UI's run lists and the log lines.

Each flow passes ``run_name(...)`` as its ``flow_run_name``: Prefect calls it when the run
starts, and it reads the run's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any


def last_part(uri: object) -> str:
    """The last part of a folder or ``s3://`` URI: ``batch-07`` of ``/data/batch-07/`` or
    ``s3://bucket/in/batch-07``; a release's version of ``ROOT/releases/v2``."""
    text = str(uri or "").rstrip("/")
    return PurePosixPath(text).name or text


def describe(kind: str, parameters: Mapping[str, Any], *names: str) -> str:
    """``kind`` followed by the last part of each named parameter that is set."""
    parts = [last_part(parameters[n]) for n in names if parameters.get(n)]
    return " ".join([kind, *parts])


def run_name(kind: str, *names: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``describe(kind, <the run's parameters>, *names)``."""

    def name() -> str:
        from prefect.runtime import flow_run

        return describe(kind, flow_run.parameters, *names)

    name.__name__ = f"{kind}_run_name"
    return name


def pipeline_run_name() -> str:
    """``pipeline batch-07 to v1``: the batch it ingests and the release it publishes."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return f"{describe('pipeline', parameters, 'source')} to {parameters.get('version', 'v1')}"
