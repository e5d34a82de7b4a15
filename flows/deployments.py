"""Deployments served to a Prefect server: ``prefect deployment run ingest/<name>``,
``validate/<name>``, ``filter/<name>`` and ``annotate/<name>`` (the crowd stages are idempotent: schedule them)."""

from __future__ import annotations

from prefect import serve


def serve_all(*, name: str = "local") -> None:
    """Serve every flow's deployment until interrupted (needs ``PREFECT_API_URL``)."""
    from flows.crowd import annotate, filter_stage, validate
    from flows.ingest import ingest

    serve(ingest.to_deployment(name=name, description="Mining ingestion with dedup"),
          validate.to_deployment(name=name, description="Crowd validation: push, pull, decide"),
          filter_stage.to_deployment(name=name, description="Ethical filtration by the crowd"),
          annotate.to_deployment(name=name, description="Hand boxes and leading hand"))
