"""``hagrid``: the command line over the flows, for people who do not use the Prefect UI."""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from flows import terminal

PACKAGE = "hagrid-curation"


class _PlainHelp:
    """Help without a ``<bool>`` type on on/off flags (typer shows one on every flag), with
    arguments named in capitals (``OUT``, as the help texts call them) and a required one
    shown as plain ``OUT`` in the usage line (typer writes ``{OUT}``), and paragraphs
    wrapped to the terminal (typer's rich mode keeps the docstring's line breaks)."""

    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = "\n\n".join(" ".join(p.split())
                                     for p in inspect.cleandoc(self.help).split("\n\n"))

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in pieces]


class _Command(_PlainHelp, TyperCommand):
    """A command after which Prefect's held console records are shown (``prefect_started``)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        finally:
            terminal.release_held()


class _Group(_PlainHelp, TyperGroup):
    """The ``hagrid`` command group, with ``_PlainHelp``'s help."""


class _App(typer.Typer):
    """Every command with ``_PlainHelp``."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(add_completion=False, no_args_is_help=True, cls=_Group,
           help="Curation pipeline for crowd-sourced hand-gesture photos.")
console = Console(stderr=True)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"hagrid {version(PACKAGE)}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="print the version and exit")] = False) -> None:
    """Curation pipeline for crowd-sourced hand-gesture photos."""


def print_error(problem: object) -> None:
    """One ``error:`` line on stderr: not wrapped, the text shown as is (no markup). Prefect's
    console copy of the failed run's errors (a traceback) is dropped: this line tells it."""
    terminal.drop_held_errors()
    console.print(f"[red]error:[/red] {escape(str(problem))}", soft_wrap=True)


def print_warning(text: str) -> None:
    """One ``warning:`` line on stderr, not wrapped (no markup); Prefect's console copy
    of the same warning logged by the flow is dropped."""
    terminal.drop_held_warning(text)
    console.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)


def _quiet_prefect() -> None:
    """Run without a server unless one is configured: Prefect's ephemeral mode, no analytics
    (nor their first-run notice). Flow runs log to the API (their pages in the UI) at INFO;
    the console shows only Prefect's warnings and errors."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    _temporary_server_dies_with_cli()


@contextmanager
def prefect_started() -> Iterator[None]:
    """Prefect ready for the flow run in the block, before its progress bar is drawn (so
    enter it after the root's lock, whose refusal is then immediate, and before the bar):
    flow run warnings and errors held back from the console, and its temporary server
    started under a spinner when no server is configured (``flows.terminal``); a server
    that does not start is one error line, exit 1."""
    terminal.hold_run_records()
    if terminal.temporary_server_needed():
        try:
            with console.status("starting Prefect's temporary server (PREFECT_API_URL unset)"):
                terminal.start_temporary_server()
        except terminal.PrefectUnavailable as exc:
            print_error(exc)
            raise typer.Exit(1) from None
    with terminal.no_heartbeats_on_a_temporary_server():
        yield


class _SubprocessDyingWithParent:
    """Prefect's server module's view of ``subprocess``: ``Popen`` children die with us, and
    write what they print to ``terminal.server_log()``, not to the terminal (the server's
    errors while it stops with the CLI, under load, are no news to the user)."""

    def __getattr__(self, name: str) -> Any:
        import subprocess

        return getattr(subprocess, name)

    @staticmethod
    def Popen(args: list[str], **kwargs: Any) -> Any:
        import subprocess

        from tasks.processes import dying_with_parent

        if "stdout" in kwargs or "stderr" in kwargs:
            return subprocess.Popen(dying_with_parent(args), **kwargs)
        log = terminal.server_log()
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(dying_with_parent(args), stdout=out,
                                    stderr=subprocess.STDOUT, **kwargs)


def _temporary_server_dies_with_cli() -> None:
    """In ephemeral mode Prefect starts a temporary server as a child process, which a
    ``kill -9`` of the CLI would leave running: start it so that it ends with the CLI."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api import server

    server.subprocess = _SubprocessDyingWithParent()  # type: ignore[assignment]


def print_summary(summary: dict[str, Any], *, wall_s: float | None = None) -> None:
    """The run summary as tables on the terminal. ``wall_s``: the command's whole time,
    Prefect's start included (the summary's ``elapsed_s`` is the flow's own)."""
    out = Console()
    took = f"{summary['elapsed_s']:.1f} s"
    if wall_s is not None and wall_s > summary["elapsed_s"]:
        took += f" ({wall_s:.1f} s with Prefect's start)"
    out.print(f"[bold]ingest[/bold] into {escape(str(summary.get('root', '')))}: "
              f"{summary['inputs']} inputs ({summary['skipped_already_seen']} already seen, "
              f"skipped) in {took}", soft_wrap=True)
    table = Table("outcome / reason", Column("count", justify="right"))
    table.add_row("[green]accepted[/green]", str(summary["accepted"]))
    table.add_row("[red]rejected[/red]", str(summary["rejected"]))
    for reason, n in summary["reasons"].items():
        table.add_row(f"  {escape(reason)}", str(n))
    out.print(table)
    if summary["sample_duplicates"]:
        pairs = Table(Column("file", overflow="fold"), "reason",
                      Column("kept file", overflow="fold"),
                      Column("distance", justify="right"), Column("similarity", justify="right"),
                      title="sample duplicate pairs", box=None, pad_edge=False,
                      header_style="bold underline")
        for p in summary["sample_duplicates"]:
            pairs.add_row(escape(p["file"]), p["reason"],
                          escape(p["kept_file"] or p["duplicate_of"] or ""),
                          _number(p["distance"], "d"), _number(p["similarity"], ".3f"))
        out.print(pairs)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_ingest(source: str, submissions: str, root: str, *, min_side: int = 720,
               workers: int | None = None, commit_every: int = 2048,
               s3_endpoint_url: str | None = None, show_progress: bool = True,
               max_bytes: int = 100_000_000, wait_for_lock: float = 0.0,
               cluster: str | None = None) -> dict[str, Any]:
    """Run the ingest flow in-process with a progress bar; returns its summary.

    ``workers``: inspection processes (default: the usable cores); ``cluster``: a Dask
    scheduler address or ``local`` instead (``flows.cluster``)."""
    _quiet_prefect()
    from flows.ingest import ingest
    from tasks import progress

    preflight(source, submissions, s3_endpoint_url=s3_endpoint_url)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, disable=not show_progress)
    with holding_root(root, command="ingest", wait_s=wait_for_lock,
                      s3_endpoint_url=s3_endpoint_url), prefect_started(), bar:
        tid = bar.add_task("ingest", total=None)
        progress.set_listener(lambda _s, done, total: bar.update(tid, completed=done, total=total))
        try:
            return ingest(source=source, submissions=submissions, root=root, min_side=min_side,
                          commit_every=commit_every, s3_endpoint_url=s3_endpoint_url,
                          max_bytes=max_bytes, wait_for_lock=wait_for_lock, workers=workers,
                          cluster=cluster)
        finally:
            progress.set_listener(None)


@contextmanager
def holding_root(root: str, *, command: str, wait_s: float,
                 s3_endpoint_url: str | None = None) -> Iterator[None]:
    """Take the dataset root's writer lock in the CLI process, before Prefect starts: a
    refusal is then immediate and clean, and the flow's own lock is re-entrant. Says what a
    run that died holding the lock left (removed)."""
    from flows.root_lock import locked_root
    from tasks.storage import open_storage

    with locked_root(open_storage(root, endpoint_url=s3_endpoint_url), command=command,
                     wait_s=wait_s):
        yield


def require_root(root: str) -> None:
    """A local dataset root must exist (exit 2): a run would make an empty one and find
    nothing in it. An ``s3://`` root is checked by the run."""
    if not root.startswith("s3://") and not Path(root).is_dir():
        print_error(f"no dataset root at {root}: ingest a batch into it first "
                    "(hagrid ingest SOURCE --root ROOT), or name another with --root")
        raise typer.Exit(2)


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
    """Generate a synthetic crowd batch: photos, OUT/submissions.csv and OUT/truth.jsonl, and
    a reference picture per gesture in OUT/references."""
    from tasks.simulation.generator import generate_batch
    from tasks.simulation.references import write_references

    summary = generate_batch(out, n=n, seed=seed, dup_rate=dup_rate, problems=problems,
                             workers=workers)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.kinds.items(),
                                                     key=lambda kv: (-kv[1], kv[0])))
    console.print(f"wrote {summary.n_files} files and {summary.n_rows} submission rows into "
                  f"{escape(str(summary.out_dir))}: {escape(summary.submissions_csv.name)}, "
                  f"{escape(summary.truth_jsonl.name)}, {escape(summary.photos_dir.name)}/",
                  soft_wrap=True)
    console.print(f"inputs by kind: {kinds}")
    write_references(out / "references")
    console.print(f"reference pictures (--ls-references) in {escape(str(out / 'references'))}",
                  soft_wrap=True)


ClusterOpt = Annotated[str | None, typer.Option(
    help="run the chunk work on a Dask cluster: a scheduler address (tcp://host:8786; its "
         "workers need PREFECT_API_URL of a Prefect server) or 'local' (a LocalCluster)")]
PublishClusterOpt = Annotated[str | None, typer.Option(
    "--cluster", help="write images, shards and crops on a Dask cluster: a scheduler address "
    "(tcp://host:8786; its workers need PREFECT_API_URL of a Prefect server, and must mount "
    "a local root at the same path; with an S3 root they stage under the root) or 'local' "
    "(a LocalCluster)")]


@app.command("ingest")
def ingest_cmd(
    source: Annotated[str, typer.Argument(help="local folder or s3://bucket/prefix")],
    submissions: Annotated[str, typer.Option(help="submissions table: CSV, JSONL or Parquet")],
    root: Annotated[str, typer.Option(help="dataset root")] = "./hagrid-root",
    min_side: Annotated[int, typer.Option(help="minimum short side in pixels")] = 720,
    workers: Annotated[int | None, typer.Option(
        help="inspection processes (default: the usable cores)")] = None,
    commit_every: Annotated[int, typer.Option(help="rows per committed batch")] = 2048,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    max_bytes: Annotated[int, typer.Option(
        help="size cap per input file; larger ones are rejected as too_large unread")
    ] = 100_000_000,
    wait: WaitOpt = False,
    cluster: ClusterOpt = None,
) -> None:
    """Ingest a batch of submissions: checks, exact and near dedup, catalog append."""
    from tasks.storage import SourceError

    started = time.perf_counter()
    try:
        summary = run_ingest(source, submissions, root, min_side=min_side, workers=workers,
                             commit_every=commit_every, s3_endpoint_url=s3_endpoint_url,
                             max_bytes=max_bytes, wait_for_lock=_wait_s(wait),
                             cluster=cluster)
    except SourceError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary, wall_s=time.perf_counter() - started)


# small model, 64 px crops, read in the training process (DataLoader workers cost seconds
# per epoch to start, more than these epochs take), a short-run learning rate: ~4 min on 2 cores (bench/RESULTS.md)
DEMO_EPOCHS, DEMO_TRAIN_WORKERS = 80, 0


@app.command()
def demo(root: Annotated[str, typer.Option(help="dataset root")] = "./demo/root",
         n: Annotated[int, typer.Option("--n", help="distinct photos")] = 1300,
         seed: Annotated[int, typer.Option(help="random seed")] = 0,
         epochs: Annotated[int, typer.Option(help="training epochs")] = DEMO_EPOCHS,
         input_size: Annotated[int, typer.Option(help="training input side, px")] = 64,
         device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
         train: Annotated[bool, typer.Option(help="train the baseline on the release")] = True,
         audit: Annotated[bool, typer.Option(
             help="then audit the release's labels (5 fold models of 20 epochs); the next "
                  "annotate run sends the flagged images to review")] = False,
         ) -> None:
    """Every stage on a generated batch, as one pipeline flow run.

    Generates a crowd batch (1,300 photos and their resubmissions and broken files, about
    1,500 inputs), ingests it, runs validation, filtration and annotation with a simulated
    crowd that answers from what the generator drew (30% spammers and sloppy annotators),
    publishes release v1 with its crops view, trains the small two-head baseline on it and
    summarises each stage; with --audit, also flags the release's likely-wrong labels
    (hagrid audit)."""
    import importlib.util

    from tasks.simulation.generator import generate_batch
    from tasks.simulation.references import write_references

    batch = Path(root).parent / f"batch-seed{seed}-n{n}"
    if not (batch / "submissions.csv").exists():
        console.print(f"generating a synthetic crowd batch in {batch} ...")
        generate_batch(batch, n=n, seed=seed)
    if not (batch / "references").is_dir():  # for Label Studio runs on the demo's root
        write_references(batch / "references")
    if (train or audit) and importlib.util.find_spec("torch") is None:
        console.print("[yellow]warning:[/yellow] torch is not installed (the .[train] extra): "
                      "the baseline is not trained, the labels not audited")
        train = audit = False
    _quiet_prefect()
    from flows.pipeline import pipeline
    from schemas.train import CPU_RECIPE

    opts = _crowd_options("simulated", None, None, None, "hagrid", None, seed, 0.3)
    recipe: dict[str, Any] = {("batch_size" if k == "batch_size" else f"train_{k}"): v
                              for k, v in CPU_RECIPE.items()}
    with holding_root(root, command="demo", wait_s=0.0):
        pass  # refuse at once, cleanly, when another run holds the root; the pipeline takes
        # the lock itself from ingest to publish and lets it go before training
    with prefect_started(), progress_bars():
        summary = pipeline(source=str(batch), submissions=str(batch / "submissions.csv"),
                           root=root, crowd="simulated", options=opts, version="v1",
                           crops=True, train=train, epochs=epochs,
                           model="small", input_size=input_size, device=device, seed=seed,
                           train_workers=DEMO_TRAIN_WORKERS, audit=audit, **recipe)
    print_summary(summary["ingest"])
    for stage in ("validation", "filtration", "annotation"):
        print_stage_report(summary[stage], as_json=False)
    print_release(summary["publish"])
    if summary["train"] is not None:
        print_training(summary["train"])
    if summary["audit"] is not None:
        _print_audit(summary["audit"])


@contextmanager
def progress_bars(*, show: bool = True) -> Iterator[None]:
    """While the block runs, a progress bar on stderr per stage a flow reports
    (``tasks.progress``): ``ingest``, each epoch's ``train`` and ``eval``; the
    ``pipeline: <stage>`` reports share one bar."""
    from tasks import progress

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, disable=not show)
    bars: dict[str, Any] = {}

    def listen(label: str, done: int, total: int) -> None:
        key = label.split(":")[0]
        if key not in bars:
            bars[key] = bar.add_task(label, total=total)
        bar.update(bars[key], description=label, completed=done, total=total)

    with bar:
        progress.set_listener(listen)
        try:
            yield
        finally:
            progress.set_listener(None)


def print_release(summary: dict[str, Any]) -> None:
    """A publish summary: images per split against the target fractions, warnings about the
    splits, and where the release is (or that it existed). Paths are never wrapped."""
    if summary.get("skipped"):
        console.print(f"release {summary['version']} exists ({escape(summary['uri'])}): not "
                      "published again; publish a new one with hagrid publish --version V",
                      soft_wrap=True)
        return
    crops = summary.get("crops") or {}
    splits = summary.get("splits") or {}
    share, target = splits.get("fractions", {}), splits.get("target_fractions", {})
    table = Table("split", Column("images", justify="right"),
                  *([Column("share", justify="right"), Column("target", justify="right")]
                    if share else []),
                  *([Column("crops", justify="right")] if crops else []),
                  title=f"release {summary['version']}")
    for split, n in summary["split_images"].items():
        table.add_row(split, str(n),
                      *([f"{share.get(split, 0):.0%}", f"{target.get(split, 0):.0%}"]
                        if share else []),
                      *([str(crops.get(split, 0))] if crops else []))
    Console().print(table)
    for warning in splits.get("warnings", []):
        print_warning(warning)
    crop_shards = f" (+ {summary['crop_shards']} of crops)" if crops else ""
    written_on = f", written on the {summary['written_on']}" if summary.get("written_on") else ""
    console.print(f"release {summary['version']}: {summary['shards']} shards{crop_shards}"
                  f"{escape(written_on)}", soft_wrap=True)
    console.print(f"  in {escape(summary['uri'])}", soft_wrap=True)
    console.print(f"  report: {escape(summary['uri'])}/report/index.html", soft_wrap=True)


def print_training(summary: dict[str, Any]) -> None:
    """A training summary: F1 and accuracy per head on the evaluation split, the run folder
    and its best epoch."""
    table = Table("head", "F1 macro", "F1 weighted", "accuracy", "samples",
                  title=f"baseline on {summary.get('release')} ({summary.get('view')} view, "
                        f"{summary.get('epochs')} epochs, {summary.get('device')}), "
                        f"{summary.get('eval_split')} split")
    for head in ("gesture", "leading_hand"):
        if head in summary:
            m = summary[head]
            table.add_row(head, *("-" if m[k] is None else f"{m[k]:.3f}"
                                  for k in ("f1_macro", "f1_weighted", "accuracy")),
                          str(m["samples"]))
    Console().print(table)
    best = (summary.get("best") or {}).get("epoch")
    console.print(f"run folder: {escape(str(summary.get('run_dir')))}"
                  + (f" (best epoch {best})" if best is not None else ""), soft_wrap=True)


WAIT_FOREVER_S = 7 * 24 * 3600.0  # --wait: a week is "until the other run ends"
WaitOpt = Annotated[bool, typer.Option(
    "--wait", help="if another run holds the dataset root, wait for it instead of refusing")]


def _wait_s(wait: bool) -> float:
    return WAIT_FOREVER_S if wait else 0.0


CrowdOpt = Annotated[str, typer.Option("--crowd", help="labelstudio, file or simulated")]
RootOpt = Annotated[str, typer.Option(help="dataset root")]
AnswersOpt = Annotated[list[Path] | None, typer.Option(
    "--answers", help="file back end: answer tables (CSV/JSONL) to import first")]
OverlapOpt = Annotated[int, typer.Option(help="answers asked per image")]
MethodOpt = Annotated[str, typer.Option(help="aggregation: mv, wmv, ds, glad, wawa, zbs, mace, ocds")]
CyclesOpt = Annotated[int | None, typer.Option(
    help="pull-decide-push cycles in this run (default: 1, or until settled when simulated)")]
LsUrlOpt = Annotated[str | None, typer.Option(help="Label Studio URL [$LABEL_STUDIO_URL]")]
LsTokenOpt = Annotated[str | None, typer.Option(
    help="Label Studio API token [$LABEL_STUDIO_API_KEY]")]
LsPrefixOpt = Annotated[str, typer.Option(help="Label Studio project title prefix")]
LsDocRootOpt = Annotated[str | None, typer.Option(
    help="the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (local dataset roots)")]
LsReferencesOpt = Annotated[str | None, typer.Option(
    help="folder (or s3://) of <gesture>.png/.jpg reference pictures, one per gesture class, "
         "shown to Label Studio annotators (hagrid synth draws one: BATCH/references)")]
SimSeedOpt = Annotated[int, typer.Option(help="simulated crowd: seed")]
SimSpamOpt = Annotated[float, typer.Option(help="simulated crowd: share of spammers")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]


def _crowd_options(crowd: str, answers: list[Path] | None, ls_url: str | None,
                   ls_token: str | None, ls_project_prefix: str, ls_document_root: str | None,
                   sim_seed: int, sim_spammers: float, *,
                   ls_references: str | None = None) -> Any:
    from schemas.crowd import CrowdBackendOptions

    return CrowdBackendOptions(kind=crowd, answers=tuple(str(p) for p in answers or ()),
                               ls_url=ls_url, ls_token=ls_token,
                               ls_project_prefix=ls_project_prefix,
                               ls_document_root=ls_document_root, ls_references=ls_references,
                               sim_seed=sim_seed, sim_spammer_share=sim_spammers)


def print_stage_report(report: dict[str, Any], *, as_json: bool) -> None:
    """A stage report as tables (or JSON): the verdicts of all the stage's images, where
    this run left them (queue states; each image once), rejected answers, agreement, and
    the worker quality table."""
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    from tasks.crowd.report import worker_table

    out = Console()
    out.print(f"[bold]{report['stage']}[/bold] on {escape(str(report.get('root', '')))} "
              f"({report['backend']}, {report['method']}): pulled {report['answers_pulled']} "
              f"answers, pushed {report['pushed']} tasks")
    out.print(_count_table("verdict", report["verdicts"], title="verdicts (every image)"))
    out.print(_count_table("queue state", report["queue"], title="queue after this run"))
    if report["answers_rejected"]:
        out.print(_count_table("reason", report["answers_rejected"], what="answers",
                               title="answers rejected", total=False))
    if report.get("agreement"):
        out.print(_count_table("agreement (mean IoU)", report["agreement"],
                               title="annotator agreement", total=False))
    headers, rows = worker_table(report["workers"])
    if headers:
        # narrow columns wrap their headers (a word a line): the reasons get the room
        narrow = [max([*(len(r[i]) for r in rows), *map(len, h.split())])
                  for i, h in enumerate(headers)]
        workers = Table(*(Column(h, overflow="fold", max_width=None if h == "why" else n,
                                 min_width=min(n, 20) if h == "worker" else None)
                          for h, n in zip(headers, narrow, strict=True)),
                        title="worker quality", box=None, pad_edge=False,
                        header_style="bold underline")
        flagged = headers.index("discounted") if "discounted" in headers else None
        for row in rows:
            workers.add_row(*("[red]yes[/red]" if i == flagged and c == "yes" else escape(c)
                              for i, c in enumerate(row)))
        out.print(workers)
        if report.get("discount_rule"):
            out.print(f"[dim]{escape(report['discount_rule'])}[/dim]")


def _count_table(label: str, counts: dict[str, int], *, title: str, what: str = "images",
                 total: bool = True) -> Table:
    table = Table(label, Column(what, justify="right"), title=title)
    for k, v in counts.items():
        table.add_row(escape(str(k)), str(v))
    if total and len(counts) > 1:
        table.add_section()
        table.add_row("total", str(sum(counts.values())))
    return table


def exit_if_answers_quarantined(report: dict[str, Any], options: Any) -> None:
    """Say which answer tables were quarantined and why; exit 1 when one given with
    ``--answers`` was (the run itself went on with the others)."""
    for q in report.get("quarantined", []):
        console.print(f"[red]answer table {escape(q['file'])} was quarantined[/red] as "
                      f"{escape(q['moved_to'])}: {escape(q['reason'])}",
                      soft_wrap=True)  # a path cut across lines cannot be copied
    if any(q["file"] in options.answers for q in report.get("quarantined", [])):
        raise typer.Exit(1)


def _run_stage(stage_name: str, *, root: str, options: Any, cycles: int | None,
               **settings: Any) -> dict[str, Any]:
    _quiet_prefect()
    from flows.crowd import filter_stage, validate

    if cycles is None:
        cycles = 20 if options.kind == "simulated" else 1
    from flows.annotate import annotate

    flows: dict[str, Any] = {"validation": validate, "filtration": filter_stage,
                             "annotation": annotate}
    flow = flows[stage_name]
    try:
        if "taxonomy" in settings:  # a bad setting is told before the root is looked at
            from schemas.taxonomy import load_taxonomy

            load_taxonomy(settings["taxonomy"])
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    require_root(root)
    try:
        with holding_root(root, command=flow.name, wait_s=settings.get("wait_for_lock", 0.0)), \
                prefect_started():
            return flow(root=root, crowd=options.kind, options=options, cycles=cycles,
                        **settings)
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None


@app.command("validate")
def validate_cmd(root: RootOpt = "./hagrid-root", crowd: CrowdOpt = "labelstudio",
                 answers: AnswersOpt = None, overlap: OverlapOpt = 3, method: MethodOpt = "ds",
                 cycles: CyclesOpt = None, ls_url: LsUrlOpt = None, ls_token: LsTokenOpt = None,
                 ls_project_prefix: LsPrefixOpt = "hagrid", ls_document_root: LsDocRootOpt = None,
                 ls_references: LsReferencesOpt = None,
                 sim_seed: SimSeedOpt = 0, sim_spammers: SimSpamOpt = 0.3,
                 as_json: JsonOpt = False, wait: WaitOpt = False) -> None:
    """Stage 2, validation: push pending images to the crowd, pull answers, aggregate."""
    opts = _crowd_options(crowd, answers, ls_url, ls_token, ls_project_prefix,
                          ls_document_root, sim_seed, sim_spammers, ls_references=ls_references)
    report = _run_stage("validation", root=root, options=opts, cycles=cycles,
                        overlap=overlap, method=method, wait_for_lock=_wait_s(wait))
    print_stage_report(report, as_json=as_json)
    exit_if_answers_quarantined(report, opts)


@app.command("filter")
def filter_cmd(root: RootOpt = "./hagrid-root", crowd: CrowdOpt = "labelstudio",
               answers: AnswersOpt = None, overlap: OverlapOpt = 3, method: MethodOpt = "ds",
               flag_policy: Annotated[str, typer.Option(
                   help="aggregate: the method's P(flag) >= 0.3 excludes; any_credible: one "
                        "flag from a non-discounted worker excludes")] = "aggregate",
               cycles: CyclesOpt = None, ls_url: LsUrlOpt = None, ls_token: LsTokenOpt = None,
               ls_project_prefix: LsPrefixOpt = "hagrid", ls_document_root: LsDocRootOpt = None,
               sim_seed: SimSeedOpt = 0, sim_spammers: SimSpamOpt = 0.3,
               as_json: JsonOpt = False, wait: WaitOpt = False) -> None:
    """Stage 3, ethical filtration of validated images: flagged images are excluded.

    By default (--flag-policy aggregate) an image is excluded when the aggregation
    method's probability of a flag (child, nudity, text, personal data) reaches 0.3, so
    one flag from a worker the method trusts is enough and one from a worker it does not
    is not; --flag-policy any_credible excludes on any flag from a worker who is not
    discounted."""
    opts = _crowd_options(crowd, answers, ls_url, ls_token, ls_project_prefix,
                          ls_document_root, sim_seed, sim_spammers)
    report = _run_stage("filtration", root=root, options=opts, cycles=cycles,
                        overlap=overlap, method=method, flag_policy=flag_policy,
                        wait_for_lock=_wait_s(wait))
    print_stage_report(report, as_json=as_json)
    exit_if_answers_quarantined(report, opts)


@app.command("annotate")
def annotate_cmd(root: RootOpt = "./hagrid-root", crowd: CrowdOpt = "labelstudio",
                 answers: AnswersOpt = None, overlap: OverlapOpt = 3,
                 min_agreement: Annotated[float, typer.Option(
                     help="mean IoU below which an image is asked again")] = 0.7,
                 cycles: CyclesOpt = None, ls_url: LsUrlOpt = None, ls_token: LsTokenOpt = None,
                 ls_project_prefix: LsPrefixOpt = "hagrid", ls_document_root: LsDocRootOpt = None,
                 ls_references: LsReferencesOpt = None,
                 sim_seed: SimSeedOpt = 0, sim_spammers: SimSpamOpt = 0.3,
                 taxonomy: Annotated[str, typer.Option(
                     help="box labels answers may use: hagrid_v1 or hagrid_v2")] = "hagrid_v1",
                 as_json: JsonOpt = False, wait: WaitOpt = False) -> None:
    """Stage 4, annotation: hand boxes and leading hand for validated, unflagged images."""
    opts = _crowd_options(crowd, answers, ls_url, ls_token, ls_project_prefix,
                          ls_document_root, sim_seed, sim_spammers, ls_references=ls_references)
    report = _run_stage("annotation", root=root, options=opts, cycles=cycles,
                        overlap=overlap, min_agreement=min_agreement, taxonomy=taxonomy,
                        wait_for_lock=_wait_s(wait))
    print_stage_report(report, as_json=as_json)
    exit_if_answers_quarantined(report, opts)


@app.command()
def aggregate(root: RootOpt = "./hagrid-root",
              stage: Annotated[str, typer.Option(help="validation or filtration")] = "validation",
              method: MethodOpt = "ds", overlap: OverlapOpt = 3, wait: WaitOpt = False) -> None:
    """Recompute a stage's verdicts from the stored answers with another method."""
    from flows.crowd import reaggregate
    from schemas.crowd import CrowdSettings, Stage

    require_root(root)
    result = reaggregate(root, Stage(stage), settings=CrowdSettings(method=method,
                                                                    overlap=overlap),
                         wait_for_lock=_wait_s(wait))
    console.print(f"{stage}: {result['decisions']} decisions with {method}, "
                  f"{result['changed']} verdicts changed, {result['undecided']} not confident "
                  f"with {method} (kept as they were)")


@app.command()
def golden(file: Annotated[Path, typer.Argument(help="CSV with image_id, answer [, reason]")],
           root: RootOpt = "./hagrid-root",
           stage: Annotated[str, typer.Option(help="validation or filtration")] = "validation",
           wait: WaitOpt = False) -> None:
    """Add control images with known answers to a stage (mixed into its crowd tasks)."""
    from flows.crowd import add_golden
    from schemas.crowd import Stage

    require_root(root)
    added, problems = add_golden(root, Stage(stage), file, wait_for_lock=_wait_s(wait))
    for p in problems:
        console.print(f"[red]refused[/red] {p}")
    console.print(f"{stage}: {added} control images added")
    if problems:
        raise typer.Exit(1)


@app.command("import-hagrid")
def import_hagrid_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="DATASET_DIR/<gesture>/<name>.jpg")],
    annotations_dir: Annotated[Path, typer.Argument(
        help="ANNOTATIONS_DIR/<gesture>.json or ANNOTATIONS_DIR/<split>/<gesture>.json")],
    root: RootOpt = "./hagrid-root",
    mode: Annotated[str, typer.Option(
        help="accept: final annotations; preannotate: pre-annotations annotators correct")
    ] = "accept",
    taxonomy: Annotated[str, typer.Option(help="hagrid_v1 or hagrid_v2")] = "hagrid_v1",
    min_side: Annotated[int, typer.Option(help="minimum short side in pixels")] = 720,
    keep_user_ids: Annotated[bool, typer.Option(
        "--keep-user-ids",
        help="keep user_ids that are already hex hashes (HaGRID's) as the catalog's subject "
             "ids, instead of re-hashing them with the root's salt")] = False,
    as_json: JsonOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Import a dataset in the published HaGRID layout (images and annotations).

    Images go through ingest (dedup included), entries become accepted annotations or
    pre-annotations. Each user_id is re-hashed with the dataset root's salt, like any worker
    id: images of one subject still share one id (splits stay subject-disjoint), but the ids are
    not HaGRID's; --keep-user-ids keeps ids that are already hex hashes. Entries without a
    leading hand (the v2 format) import with the leading hand unknown. Boxes of photos with
    an EXIF orientation tag are turned from the stored pixels onto the upright image."""
    _quiet_prefect()
    from schemas.taxonomy import load_taxonomy
    from tasks import progress
    from tasks.annotate.hagrid_import import ImportMode, import_hagrid, summary_rows
    from tasks.storage import SourceError

    missing = [str(p) for p in (dataset_dir, annotations_dir) if not p.is_dir()]
    if missing or mode not in {m.value for m in ImportMode}:
        problem = f"not a folder: {', '.join(missing)}" if missing else f"unknown mode {mode!r}"
        print_error(problem)
        raise typer.Exit(2)

    def ingest_batch(source: str, submissions: str, root_uri: str, *,
                     keep_user_ids: bool) -> dict[str, Any]:
        from flows.ingest import ingest  # run_ingest without a taxonomy option: same bar

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=console)
        with bar:
            tid = bar.add_task("ingest", total=None)
            progress.set_listener(lambda _s, n, total: bar.update(tid, completed=n, total=total))
            try:
                return ingest(source=source, submissions=submissions, root=root_uri,
                              min_side=min_side, taxonomy=taxonomy,
                              keep_user_ids=keep_user_ids)
            finally:
                progress.set_listener(None)

    try:
        with holding_root(root, command="import-hagrid", wait_s=_wait_s(wait)), \
                prefect_started():
            summary = import_hagrid(dataset_dir, annotations_dir, root=root,
                                    mode=ImportMode(mode), taxonomy=load_taxonomy(taxonomy),
                                    ingest=ingest_batch, keep_user_ids=keep_user_ids)
    except (SourceError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if summary["orientation_tagged"]:
        console.print(f"[yellow]warning:[/yellow] {summary['orientation_tagged']} imported "
                      "photos carry an EXIF orientation tag: their boxes were turned from the "
                      "stored pixels onto the upright image (mirroring tags also swap the "
                      "leading hand)", soft_wrap=True)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    table = Table("import-hagrid", "count", title=f"{summary['mode']} into {summary['root']}")
    for label, n in summary_rows(summary):
        table.add_row(label, str(n))
    Console().print(table)


CropsOpt = Annotated[bool, typer.Option(
    "--crops", help="also write the crops view: one square hand crop per box "
                    "(crops/manifests, crops/shards), for training")]
CropSizeOpt = Annotated[int, typer.Option(help="crops view: crop side in pixels")]
CropScaleOpt = Annotated[float, typer.Option(
    help="crops view: window side as a multiple of the box's longer side")]


@app.command()
def publish(
    root: RootOpt = "./hagrid-root",
    version: Annotated[str, typer.Option(help="release version: the folder releases/<V>")] = "v1",
    fractions: Annotated[str | None, typer.Option(
        help="split fractions: 92/8 (train/test), 76/9/15 (train/val/test) or train=..,..; "
             "default the taxonomy's: 92/8 for hagrid_v1, 76/9/15 for hagrid_v2")
    ] = None,
    shard_max_mb: Annotated[int, typer.Option(help="largest shard, in MB")] = 1024,
    shard_max_count: Annotated[int, typer.Option(help="most samples per shard")] = 10_000,
    yolo: Annotated[bool, typer.Option(help="also write YOLO labels")] = False,
    seed: Annotated[int, typer.Option(help="tie-breaking seed of the split")] = 0,
    taxonomy: Annotated[str, typer.Option(help="hagrid_v1 or hagrid_v2")] = "hagrid_v1",
    class_order: Annotated[str, typer.Option(
        help="COCO/YOLO class indices: hagrid (the order of HaGRID's own configs and "
             "converters) or taxonomy")] = "hagrid",
    workers: Annotated[int, typer.Option(help="shards written at once (processes)")] = 2,
    crops: CropsOpt = False,
    crop_size: CropSizeOpt = 256,
    crop_scale: CropScaleOpt = 2.0,
    cluster: PublishClusterOpt = None,
    as_json: JsonOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Publish an immutable release ROOT/releases/VERSION from the catalog.

    Writes manifests, shards, HaGRID and COCO exports, data contracts, report, data card
    and checksums; with --crops also the crops view (one square hand crop per box, in
    crops/manifests and crops/shards). Warns when a split lands far from its target
    fraction or lacks a class."""
    _quiet_prefect()
    from flows.publish import ContractsFailed
    from flows.publish import publish as publish_flow
    from schemas.release import parse_fractions
    from tasks.publish.writer import ReleaseExists, StagingNotVisible

    try:
        if fractions:
            parse_fractions(fractions)
    except ValueError as exc:
        print_error(f"--fractions: {exc}")
        raise typer.Exit(2) from None
    require_root(root)
    try:
        with holding_root(root, command=f"publish {version}", wait_s=_wait_s(wait),
                          s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL")), \
                prefect_started():
            summary = publish_flow(root=root, version=version, fractions=fractions,
                                   shard_max_bytes=shard_max_mb * 1_000_000,
                                   shard_max_count=shard_max_count, yolo=yolo, seed=seed,
                                   taxonomy=taxonomy, class_order=class_order, workers=workers,
                                   s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                                   crops=crops, crop_size=crop_size, crop_scale=crop_scale,
                                   cluster=cluster)
    except (ReleaseExists, ContractsFailed, StagingNotVisible, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    print_release(summary)


@app.command("export-layout")
def export_layout_cmd(
    release: Annotated[str, typer.Argument(help="a release folder (or s3:// URI)")],
    out: Annotated[Path, typer.Argument(help="folder to write the layout into")],
    split: Annotated[list[str] | None, typer.Option(help="only these splits")] = None,
    layout: Annotated[str, typer.Option(
        "--format", help="hagrid: <gesture>/<id>.jpg and annotations/<split>/<gesture>.json; "
                         "yolo: images/<split>/<id>.jpg, labels/<split>/<id>.txt, data.yaml")
    ] = "hagrid",
) -> None:
    """Write a release as the published HaGRID folders or as a YOLO dataset.

    The images (as JPEG) in the published HaGRID folder layout next to the HaGRID
    annotation files, or as an Ultralytics YOLO dataset, so code written for either reads
    it as is."""

    from tasks.publish.exports import ExportError, export_layout, export_yolo
    from tasks.storage import open_storage

    exports = {"hagrid": export_layout, "yolo": export_yolo}
    if layout not in exports:
        print_error(f"unknown format {layout!r}; use one of {sorted(exports)}")
        raise typer.Exit(2)
    store = open_storage(release, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    if not store.exists("SHA256SUMS"):
        print_error(f"not a release folder: {release}")
        raise typer.Exit(2)
    try:
        counts = exports[layout](store, out, splits=split)
    except (ExportError, OSError) as exc:  # a refused target or name, a tampered release
        print_error(exc)
        raise typer.Exit(2) from None
    said = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
    console.print(f"{layout} layout in {escape(str(out))}: {said}", soft_wrap=True)


# options train and audit share
ReleaseOpt = Annotated[str, typer.Option(help="the release: ROOT/releases/V or s3://...")]
ModelOpt = Annotated[str, typer.Option(help="resnet18 or small (a narrow ResNet for CPUs)")]
InputSizeOpt = Annotated[int | None, typer.Option(
    help="input side in px (default: 224 for resnet18, 64 for small)")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")]
ViewOpt = Annotated[str, typer.Option(
    help="auto (the hand crops view when published), full or crops")]
VerifyShardsOpt = Annotated[bool, typer.Option(
    "--verify-shards/--no-verify-shards",
    help="hash the shards against SHA256SUMS (off: check presence and length only)")]
S3Opt = Annotated[str | None, typer.Option(help="S3 endpoint")]


@app.command("train")
def train_cmd(
    release: ReleaseOpt,
    out: Annotated[str | None, typer.Option(
        help="run folder (default: ROOT/runs/V-<UTC time> for a release ROOT/releases/V, "
             "else ./runs/V-<UTC time>)")] = None,
    epochs: Annotated[int, typer.Option(help="epochs in all (--resume continues to it)")] = 10,
    batch_size: Annotated[int, typer.Option(help="crops per batch")] = 64,
    model: ModelOpt = "small",
    input_size: InputSizeOpt = None,
    device: DeviceOpt = "auto",
    view: ViewOpt = "auto",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 2,
    seed: Annotated[int, typer.Option(help="seed of the weights, the order and the crops")
                    ] = 0,
    lr: Annotated[float, typer.Option(
        help="SGD learning rate (HaGRID's 0.005; ~0.05 for short CPU runs from scratch)")
    ] = 0.005,
    lr_decay: Annotated[str, typer.Option(
        help="after the warm-up: none (HaGRID's constant rate) or cosine (to 0 at the end)")
    ] = "none",
    shift: Annotated[float, typer.Option(
        help="augmentation: move the crop's centre by up to this fraction of its side")] = 0.0,
    color_jitter: Annotated[float, typer.Option(
        help="augmentation: scale brightness and contrast by up to 1 +- this")] = 0.0,
    flip: Annotated[float, typer.Option(
        help="augmentation: mirror this share of the crops (leading hand swapped)")] = 0.0,
    warmup_iters: Annotated[int, typer.Option(
        help="linear warm-up iterations (at most an epoch's less one)")] = 1000,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue the run in --out from its last completed epoch")] = False,
    verify_shards: VerifyShardsOpt = True,
    s3_endpoint_url: S3Opt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train HaGRID v1's two-head classifier (gesture, leading hand) on a release.

    Trains on the train split, evaluates on val (else test). The release is checked first
    (SHA256SUMS, shards, manifest schema): a failing one exits 2 before any training. The
    run folder gets the weights (model.safetensors, best.safetensors), run.json,
    metrics.json and confusion matrices."""
    _quiet_prefect()
    from schemas.train import DEFAULT_INPUT_SIZE, TrainSettings

    try:
        size = input_size or DEFAULT_INPUT_SIZE.get(model, 64)
        TrainSettings(epochs=epochs, batch_size=batch_size, model=model, input_size=size,
                      device=device, view=view, workers=workers, seed=seed, lr=lr,
                      lr_decay=lr_decay, shift=shift, color_jitter=color_jitter, flip=flip,
                      warmup_iters=warmup_iters)
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    _train_preflight(release, view=view, s3_endpoint_url=s3_endpoint_url)
    summary = _train_with_progress(
        release=release, out=out, epochs=epochs, batch_size=batch_size, model=model,
        input_size=size, device=device, view=view, workers=workers, seed=seed, resume=resume,
        s3_endpoint_url=s3_endpoint_url, verify_shards=verify_shards, lr=lr,
        lr_decay=lr_decay, shift=shift, color_jitter=color_jitter, flip=flip,
        warmup_iters=warmup_iters)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    print_training(summary)


def _train_preflight(release: str, *, view: str, s3_endpoint_url: str | None) -> None:
    """Fail fast, before Prefect starts, on a release that fails its checks (all but the
    shard hashes, which the flow checks); exit 2."""
    from tasks.train.release import ReleaseError, open_release

    try:
        open_release(release, view=view, hash_shards=False, endpoint_url=s3_endpoint_url)
    except ReleaseError as exc:
        print_error(exc)
        raise typer.Exit(2) from None


def _train_with_progress(**parameters: Any) -> dict[str, Any]:
    """Run the train flow in-process with a bar per epoch pass; exit 2 on a refused release
    or run folder, 1 when training fails on a sample or diverges."""
    try:
        from flows.train import train
        from tasks.train.dataset import SampleError
        from tasks.train.loop import DivergedError
    except ImportError as exc:
        print_error(f"training needs torch and safetensors: pip install -e '.[train]' ({exc})")
        raise typer.Exit(2) from None
    from tasks import progress

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console)
    bars: dict[str, Any] = {}

    def show(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = bar.add_task(stage, total=total)
        bar.update(bars[stage], completed=done, total=total)

    with prefect_started(), bar:
        progress.set_listener(show)
        try:
            return train(**parameters)
        except ValueError as exc:  # ReleaseError, RunDirError, settings, no CUDA
            print_error(exc)
            raise typer.Exit(2) from None
        except (SampleError, DivergedError) as exc:
            print_error(exc)
            raise typer.Exit(1) from None
        finally:
            progress.set_listener(None)


@app.command()
def check(root: RootOpt = "./hagrid-root",
          repair: Annotated[bool, typer.Option(
              help="fix what can be fixed without losing a row")] = False,
          content: Annotated[bool, typer.Option(
              help="also read every object and compare its bytes with the sha256 in its "
                   "name (publish trusts objects whose file is unchanged since it checked "
                   "them; this finds a disk's silent damage)")] = False,
          s3_endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint")] = None,
          as_json: JsonOpt = False, wait: WaitOpt = False) -> None:
    """List a dataset root's inconsistencies (exit 1 when any is left); --repair fixes them;
    --content also reads every object."""
    from tasks.integrity import PROBLEM_KINDS, check_root, repair_root
    from tasks.storage import SourceError, open_storage

    store = open_storage(root, endpoint_url=s3_endpoint_url)
    try:
        store.check()
    except SourceError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    with holding_root(root, command="check --repair" if repair else "check",
                      wait_s=_wait_s(wait), s3_endpoint_url=s3_endpoint_url):
        report = repair_root(store) if repair else None
        problems = report.left if report else check_root(store, content=content)
        if report and content:
            problems += [p for p in check_root(store, content=True)
                         if p.kind == "object_bytes_changed"]
    if as_json:
        print(json.dumps({"repair": report.as_dict() if report else None,
                          "problems": [p.__dict__ for p in problems]}, indent=2))
    else:
        if report:
            fixed = ", ".join(f"{k} {v}" for k, v in report.fixed.items() if v)
            console.print(f"repair {report.repair_id}: fixed {fixed or 'nothing'}")
        table = Table(Column("problem", no_wrap=True, min_width=max(map(len, PROBLEM_KINDS))),
                      "count", "fixable", "what it means",
                      Column("first keys", overflow="fold", min_width=20),
                      title=f"check {store.uri} (--json lists every key)")
        for kind in sorted({p.kind for p in problems}):
            of_kind = [p for p in problems if p.kind == kind]
            table.add_row(kind, str(len(of_kind)), str(sum(p.fixable for p in of_kind)),
                          PROBLEM_KINDS[kind], "\n".join(p.key for p in of_kind[:3]))
        Console().print(table if problems else f"{store.uri}: consistent")
    if problems:
        raise typer.Exit(1)


@app.command("audit")
def audit_cmd(
    release: ReleaseOpt,
    root: Annotated[str | None, typer.Option(
        help="dataset root whose catalog gets the flags (default: ROOT of ROOT/releases/V)")
    ] = None,
    folds: Annotated[int, typer.Option(help="folds by person (fewer when fewer people)")] = 5,
    max_quality: Annotated[float | None, typer.Option(
        help="record only flags whose label quality score is below this (0-1; default: "
             "every flag cleanlab finds; 0.02 flags fewer, surer labels)")] = None,
    epochs: Annotated[int, typer.Option(help="epochs of each fold's model")] = 20,
    model: ModelOpt = "small",
    input_size: InputSizeOpt = None,
    device: DeviceOpt = "auto",
    view: ViewOpt = "auto",
    seed: Annotated[int, typer.Option(help="seed of the folds, the weights and the crops")] = 0,
    verify_shards: VerifyShardsOpt = True,
    s3_endpoint_url: S3Opt = None,
    as_json: JsonOpt = False,
) -> None:
    """Flag likely-wrong labels of a release (gesture and leading hand) for review.

    One model per fold of people, trained on the others (the CPU recipe), and cleanlab over
    its out-of-fold probabilities. New flags go to the root's label_issues table (an image
    at most once per release, never a reviewed one) and ROOT/audits/V-<audit id>/."""
    _quiet_prefect()
    try:
        from flows.audit import audit, default_root
        from schemas.train import DEFAULT_INPUT_SIZE
        from tasks.audit.oof import audit_settings
        from tasks.train.dataset import SampleError
        from tasks.train.loop import DivergedError
    except ImportError as exc:
        print_error(f"the audit needs torch and cleanlab: pip install -e '.[train]' ({exc})")
        raise typer.Exit(2) from None
    try:
        size = input_size or DEFAULT_INPUT_SIZE.get(model, 64)
        audit_settings(epochs=epochs, model=model, input_size=size, device=device, seed=seed,
                       view=view)
        if folds < 2:
            raise ValueError(f"--folds must be at least 2, got {folds}")
        if max_quality is not None and not 0 < max_quality <= 1:
            raise ValueError(f"--max-quality must be in (0, 1], got {max_quality}")
        root = root or default_root(release)
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    _train_preflight(release, view=view, s3_endpoint_url=s3_endpoint_url)
    try:
        with prefect_started(), console.status(
                f"auditing {release}: {folds} fold models of {epochs} epochs"):
            summary = audit(release=release, root=root, folds=folds, epochs=epochs, seed=seed,
                            input_size=size, model=model, device=device, view=view,
                            verify_shards=verify_shards, max_quality=max_quality,
                            s3_endpoint_url=s3_endpoint_url)
    except ValueError as exc:  # ReleaseError, settings, no CUDA
        print_error(exc)
        raise typer.Exit(2) from None
    except (SampleError, DivergedError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    _print_audit(summary)


def _print_audit(summary: dict[str, Any]) -> None:
    """Flags per head, the new rows' first lines, and where they were written."""
    heads = Table("head", "flagged", "new rows", "most flagged labels",
                  title=f"audit {summary['audit_id']} of {summary['release']}: "
                        f"{summary['images']} images, {summary['boxes']} boxes, "
                        f"{summary['folds']} folds by person")
    for head, flagged in summary["flagged"].items():
        per_label = sorted(summary["flagged_per_class"][head].items(),
                           key=lambda kv: (-kv[1], kv[0]))
        heads.add_row(head, str(flagged), str(summary["written"][head]),
                      ", ".join(f"{label} {n}" for label, n in per_label[:5]))
    Console().print(heads)
    if summary["top"]:
        top = Table("image_id", "box", "head", "given", "suggested", "quality",
                    title="worst new flags")
        for r in summary["top"][:10]:
            top.add_row(r["image_id"], str(r["box_index"]), r["head"], r["given_label"],
                        r["suggested_label"], f"{r['quality']:.3f}")
        Console().print(top)
    annotators = summary.get("annotators")
    if annotators and annotators["rows"]:
        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        workers = Table("annotator", "images", "flagged", "flag rate", "leading-hand quality",
                        "agreement", title="annotators, worst flag rate first")
        for r in annotators["rows"][:10]:
            workers.add_row(r["worker_id"], f"{r['images']:.0f}", f"{r['flagged']:.0f}",
                            number(r["flag_rate"]), number(r["annotator_quality"]),
                            number(r["agreement_with_consensus"]))
        Console().print(workers)
        if annotators["note"]:
            console.print(escape(annotators["note"]), soft_wrap=True)
        console.print(f"every annotator: {escape(str(annotators['csv']))}", soft_wrap=True)
    console.print(f"{summary['rows_written']} new rows in label_issues "
                  f"({summary['skipped_already_flagged']} images flagged before, "
                  f"{summary['skipped_quality']} flags at or above --max-quality, "
                  f"{summary['skipped_reviewed']} flags on reviewed images skipped); "
                  f"{escape(str(summary['issues_csv']))}", soft_wrap=True)


@app.command()
def serve(name: Annotated[str, typer.Option(help="deployment name")] = "local") -> None:
    """Serve deployments: ingest, validate, filter, annotate, publish, train, audit, pipeline.

    To the Prefect server in PREFECT_API_URL, each as FLOW/NAME (prefect deployment run
    ingest/local); train and audit are served when torch is installed (the train extra)."""
    from flows.deployments import serve_all

    serve_all(name=name)


def main() -> None:
    """Entry point of the ``hagrid`` command."""
    from tasks.lock import RootLocked

    _pool_workers_skip_main()
    try:
        sys.exit(app())
    except RootLocked as exc:  # another run writes to the root: a refusal, not a crash
        print_error(exc)
        sys.exit(2)


def _pool_workers_skip_main() -> None:
    """Keep the ``hagrid`` script out of the process pools' workers.

    A ``forkserver`` (or ``spawn``) worker runs the parent's main script again, by its path,
    before its first job: for the ``hagrid`` console script that means importing this module
    with Prefect, Typer and Rich, seconds per worker on a busy machine, for nothing (the
    jobs are functions of ``tasks``). Without a ``__file__`` on ``__main__`` the workers skip it.
    """
    main_module = sys.modules.get("__main__")
    if main_module is not None and getattr(main_module, "__spec__", None) is None:
        main_module.__dict__.pop("__file__", None)


if __name__ == "__main__":
    main()
