"""The work itself: typed functions the flows call, testable without a Prefect server.

Shared by every stage: ``storage`` (the dataset root, local or S3), ``catalog`` (the
append-only Parquet tables) and ``progress`` (a progress hook for the CLI). One package per
stage of the pipeline: ``ingest``, ``crowd`` (validation and filtration), ``annotate``,
``publish``; ``simulation`` is the synthetic generator and simulated crowd used by the demo,
the tests and the benchmarks, never by a real campaign.
"""
