"""``hagrid``: the command line over the flows, for people who do not use the Prefect UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Curation pipeline for crowd-sourced hand-gesture photos.")
console = Console(stderr=True)


def _quiet_prefect() -> None:
    """Run without a server unless one is configured: Prefect's ephemeral mode, no analytics."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def print_summary(summary: dict[str, Any]) -> None:
    """The run summary as tables on the terminal."""
    out = Console()
    out.print(f"[bold]ingest[/bold] into {summary.get('root', '')}: {summary['inputs']} inputs "
              f"({summary['skipped_already_seen']} already seen, skipped) in "
              f"{summary['elapsed_s']} s")
    table = Table("outcome / reason", "count")
    table.add_row("[green]accepted[/green]", str(summary["accepted"]))
    table.add_row("[red]rejected[/red]", str(summary["rejected"]))
    for reason, n in summary["reasons"].items():
        table.add_row(f"  {reason}", str(n))
    out.print(table)
    if summary["sample_duplicates"]:
        pairs = Table("file", "reason", "kept file", "distance", "similarity",
                      title="sample duplicate pairs")
        for p in summary["sample_duplicates"]:
            pairs.add_row(p["file"], p["reason"], p["kept_file"] or p["duplicate_of"],
                          str(p["distance"]), str(p["similarity"]))
        out.print(pairs)


def run_ingest(source: str, submissions: str, root: str, *, min_side: int = 720,
               workers: int | None = None, commit_every: int = 2048,
               s3_endpoint_url: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run the ingest flow in-process with a progress bar; returns its summary."""
    _quiet_prefect()
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.ingest import ingest
    from tasks import progress

    preflight(source, submissions, s3_endpoint_url=s3_endpoint_url)
    flow = ingest if workers is None else ingest.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=workers))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, disable=not show_progress)
    with bar:
        tid = bar.add_task("ingest", total=None)
        progress.set_listener(lambda _s, done, total: bar.update(tid, completed=done, total=total))
        try:
            return flow(source=source, submissions=submissions, root=root, min_side=min_side,
                        commit_every=commit_every, s3_endpoint_url=s3_endpoint_url)
        finally:
            progress.set_listener(None)


def preflight(source: str, submissions: str, *, s3_endpoint_url: str | None) -> None:
    """Fail fast, before Prefect starts, when the source or the table is broken."""
    from flows.ingest import read_submissions_table
    from tasks.storage import open_storage

    open_storage(source, endpoint_url=s3_endpoint_url).check()
    read_submissions_table.fn(submissions, endpoint_url=s3_endpoint_url)


@app.command()
def synth(out: Annotated[Path, typer.Argument(help="folder to write the batch into")],
          n: Annotated[int, typer.Option("--n", help="distinct original photos")] = 200,
          seed: Annotated[int, typer.Option(help="random seed")] = 0,
          dup_rate: Annotated[float, typer.Option(help="resubmissions per original")] = 0.15,
          problems: Annotated[bool, typer.Option(help="plant corrupt/bad inputs")] = True,
          workers: Annotated[int, typer.Option(help="processes")] = 2) -> None:
    """Generate a synthetic crowd batch: photos, OUT/submissions.csv and OUT/truth.jsonl."""
    from tasks.synth import generate_batch

    summary = generate_batch(out, n=n, seed=seed, dup_rate=dup_rate, problems=problems,
                             workers=workers)
    console.print(f"wrote {out}/submissions.csv and {out}/truth.jsonl: {summary}")


@app.command("ingest")
def ingest_cmd(
    source: Annotated[str, typer.Argument(help="local folder or s3://bucket/prefix")],
    submissions: Annotated[str, typer.Option(help="submissions table: CSV, JSONL or Parquet")],
    root: Annotated[str, typer.Option(help="dataset root")] = "./hagrid-root",
    min_side: Annotated[int, typer.Option(help="minimum short side in pixels")] = 720,
    workers: Annotated[Optional[int], typer.Option(help="parallel decoders")] = None,
    commit_every: Annotated[int, typer.Option(help="rows per committed batch")] = 2048,
    s3_endpoint_url: Annotated[Optional[str], typer.Option(help="S3 endpoint")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Ingest a batch of submissions: checks, exact and near dedup, catalog append."""
    from tasks.storage import SourceError

    try:
        summary = run_ingest(source, submissions, root, min_side=min_side, workers=workers,
                             commit_every=commit_every, s3_endpoint_url=s3_endpoint_url)
    except SourceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)


@app.command()
def demo(root: Annotated[str, typer.Option(help="dataset root")] = "./demo/root",
         n: Annotated[int, typer.Option("--n", help="distinct photos")] = 120,
         seed: Annotated[int, typer.Option(help="random seed")] = 0) -> None:
    """The main job on the embedded default: generate a crowd batch, ingest it, summarise."""
    from tasks.synth import generate_batch

    batch = Path(root).parent / f"batch-seed{seed}"
    if not (batch / "submissions.csv").exists():
        console.print(f"generating a synthetic crowd batch in {batch} ...")
        generate_batch(batch, n=n, seed=seed)
    summary = run_ingest(str(batch), str(batch / "submissions.csv"), root)
    print_summary(summary)


@app.command()
def serve(name: Annotated[str, typer.Option(help="deployment name")] = "local") -> None:
    """Serve the deployments (``ingest/<name>``) to the Prefect server in PREFECT_API_URL."""
    from flows.deployments import serve_all

    serve_all(name=name)


def main() -> None:
    """Entry point of the ``hagrid`` command."""
    sys.exit(app())
