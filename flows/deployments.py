"""Deployments served to a Prefect server: ``prefect deployment run ingest/<name>``."""

from __future__ import annotations

from prefect import serve


def serve_all(*, name: str = "local") -> None:
    """Serve every flow's deployment until interrupted (needs ``PREFECT_API_URL``)."""
    from flows.ingest import ingest

    serve(ingest.to_deployment(name=name, description="Mining ingestion with dedup"))
