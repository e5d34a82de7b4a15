"""Deployments served to a Prefect server, one per flow: ``prefect deployment run
ingest/<name>``, ``validate/<name>``, ``filter/<name>``, ``annotate/<name>`` (the crowd
stages are idempotent: schedule them), ``publish/<name>`` (give it a new ``version`` each
run), ``train/<name>`` (``-p release=ROOT/releases/V``), ``audit/<name>`` (``-p
release=ROOT/releases/V``: likely-wrong labels to review) and ``pipeline/<name>`` (every stage,
then training and, on request, the label audit)."""

from __future__ import annotations

import warnings
from typing import Any, cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

FLOWS: tuple[str, ...] = ("ingest", "validate", "filter", "annotate", "publish", "train",
                          "audit", "pipeline")


def described_flows() -> list[tuple[Any, str]]:
    """Every flow with the description of its deployment, in ``FLOWS`` order. Without
    torch (the optional ``.[train]`` extra) ``train`` and ``audit`` are left out, with a
    warning."""
    from flows.annotate import annotate
    from flows.crowd import filter_stage, validate
    from flows.ingest import ingest
    from flows.pipeline import pipeline
    from flows.publish import publish

    described: list[tuple[Any, str]] = [
        (ingest, "Mining ingestion with dedup"),
        (validate, "Crowd validation: push, pull, decide"),
        (filter_stage, "Ethical filtration by the crowd"),
        (annotate, "Hand boxes and leading hand"),
        (publish, "Publish an immutable release from the catalog")]
    try:
        from flows.audit import audit
        from flows.train import train
    except ModuleNotFoundError as exc:  # torch missing: serve the data flows all the same
        warnings.warn(f"train/ and audit/ are not served: {exc} (install the .[train] extra)",
                      stacklevel=2)
    else:
        described.append((train, "Train the two-head baseline on a release"))
        described.append((audit, "Flag likely-wrong labels of a release for review"))
    described.append((pipeline, "Every stage, from a crowd batch to a trained baseline"))
    return described


def serve_all(*, name: str = "local") -> None:
    """Serve every flow's deployment until interrupted (needs ``PREFECT_API_URL``)."""
    # to_deployment is sync here (no running event loop); its type also admits a coroutine
    serve(*(cast(RunnerDeployment, f.to_deployment(name=name, description=d))
            for f, d in described_flows()))
