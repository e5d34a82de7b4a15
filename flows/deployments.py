"""Deployments served to a Prefect server: ``prefect deployment run ingest/<name>``,
``validate/<name>``, ``filter/<name>``, ``annotate/<name>`` (the crowd stages are idempotent:
schedule them) and ``publish/<name>`` (give it a new ``version`` each run)."""

from __future__ import annotations

from typing import Any, cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment


def serve_all(*, name: str = "local") -> None:
    """Serve every flow's deployment until interrupted (needs ``PREFECT_API_URL``)."""
    from flows.annotate import annotate
    from flows.crowd import filter_stage, validate
    from flows.ingest import ingest
    from flows.publish import publish

    described: list[tuple[Any, str]] = [(ingest, "Mining ingestion with dedup"),
                 (validate, "Crowd validation: push, pull, decide"),
                 (filter_stage, "Ethical filtration by the crowd"),
                 (annotate, "Hand boxes and leading hand"),
                 (publish, "Publish an immutable release from the catalog")]
    # to_deployment is sync here (no running event loop); its type also admits a coroutine
    serve(*(cast(RunnerDeployment, f.to_deployment(name=name, description=d))
            for f, d in described))
