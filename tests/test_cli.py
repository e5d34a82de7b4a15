"""What ``hagrid`` shows people: help, version, refusals before any work, and the tables
and numbers of its summaries (rendered at 80 columns, as in a default terminal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import PACKAGE, app, print_release, print_stage_report, print_summary
from flows.deployments import FLOWS

HAGRID = str(Path(sys.executable).with_name("hagrid"))
COMMANDS = ("synth", "ingest", "demo", "validate", "filter", "annotate", "aggregate", "golden",
            "import-hagrid", "publish", "export-layout", "train", "check", "audit", "serve")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich renders at 80 columns, as a default terminal."""
    monkeypatch.setenv("COLUMNS", "80")


def said(output: str) -> str:
    """Output as one line of words (rich wraps long lines)."""
    return " ".join(output.split())


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hagrid {version(PACKAGE)}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_rst_markup_and_no_type_on_flags(command, terminal):
    result = CliRunner().invoke(app, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0, result.output
    assert "``" not in result.output and "<bool>" not in result.output
    assert "--help" in result.output


def test_usage_lines_name_arguments_without_braces(terminal):
    for command in COMMANDS:  # typer writes a required argument as {OUT}
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert not re.search(r"\{\w+\}", result.output), (command, result.output)
    usage = said(CliRunner().invoke(app, ["export-layout", "--help"]).output)
    assert "export-layout [OPTIONS] RELEASE OUT " in usage
    missing = CliRunner().invoke(app, ["synth"])  # the usage line of an error too
    assert missing.exit_code == 2 and "synth [OPTIONS] OUT " in said(missing.output)


def test_the_command_list_gives_each_command_a_whole_first_sentence(terminal):
    result = CliRunner().invoke(app, ["--help"])
    listed = said(result.output.replace("│", " "))
    assert "Serve deployments: ingest, validate, filter, annotate, publish, train, audit, " \
           "pipeline." in listed
    assert "Every stage on a generated batch, as one pipeline flow run." in listed


def test_serve_help_names_every_served_flow(terminal):
    text = said(CliRunner().invoke(app, ["serve", "--help"]).output)
    assert all(re.search(rf"\b{flow}\b", text) for flow in FLOWS), text


def test_filter_help_describes_the_default_flag_policy(terminal):
    result = CliRunner().invoke(app, ["filter", "--help"])
    text = said(result.output.replace("│", " "))
    assert "By default (--flag-policy aggregate)" in text and "reaches 0.3" in text
    assert "one credible flag excludes" not in text


@pytest.mark.parametrize("fractions", ["50/60", "10/10", "train=0.5,test=0.6", "-8/108"])
def test_fractions_that_do_not_add_up_are_refused(fractions, tmp_path):
    result = CliRunner().invoke(app, ["publish", "--root", str(tmp_path),
                                      "--fractions", fractions])
    assert result.exit_code == 2, result.output
    assert "error: --fractions:" in result.output
    assert not (tmp_path / "releases").exists()


@pytest.mark.parametrize("command", ["validate", "filter", "annotate", "publish", "aggregate"])
def test_a_missing_dataset_root_exits_2_and_is_not_created(command, tmp_path):
    root = tmp_path / "nowhere"
    args = [command, "--root", str(root)]
    result = CliRunner().invoke(app, args + (["--crowd", "simulated"]
                                             if command in ("validate", "filter", "annotate")
                                             else []))
    assert result.exit_code == 2, result.output
    assert f"no dataset root at {root}" in said(result.output)
    assert not root.exists()


def test_synth_says_what_it_wrote_in_words(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "b"), "--n", "2", "--workers",
                                      "1", "--no-problems", "--dup-rate", "0"])
    assert result.exit_code == 0, result.output
    text = said(result.output)
    assert "submission rows into" in text and "original 2" in text
    assert not re.search(r"[{}]|PosixPath|SynthSummary", text), text


REPORT = {"stage": "validation", "root": "/data/root", "backend": "simulated", "method": "ds",
          "answers_pulled": 30, "pushed": 4, "verdicts": {"accepted": 8, "rejected": 2},
          "queue": {"control": 3, "decided": 7}, "answers_rejected": {"unreadable": 1},
          "discount_rule": "a worker is discounted when ...",
          "workers": [
              {"worker_id": "w1", "n_answers": 12, "n_golden": 4, "golden_accuracy": 0.0,
               "golden_min_side": 1, "discounted": False,
               "discount_reason": "too few on one side: 1 of 2"},
              {"worker_id": "w2", "n_answers": 9, "n_golden": 5, "golden_accuracy": 0.4,
               "golden_min_side": 2, "discounted": True,
               "discount_reason": "accuracy below 0.70"},
              {"worker_id": "w3", "n_answers": 9, "n_golden": 0, "golden_accuracy": None,
               "golden_min_side": 0, "discounted": False,
               "discount_reason": "too few controls: 0 of 3"}]}


def test_the_stage_report_keeps_verdicts_and_queue_apart_and_says_why(terminal, capsys):
    print_stage_report(REPORT, as_json=False)
    out = capsys.readouterr().out
    totals = [int(n) for n in re.findall(r"total\s*│\s*(\d+)", out)]
    assert totals == [10, 10]  # every image once per table: 8 + 2 verdicts, 3 + 7 queued
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("w")}
    assert rows["w1"].split()[1:5] == ["12", "4", "0.00", "no"]
    assert "too few on one side: 1 of 2" in rows["w1"]
    assert rows["w2"].split()[4] == "yes" and "accuracy below 0.70" in rows["w2"]
    assert rows["w3"].split()[3] == "-"
    assert "False" not in out and "True" not in out
    for header in ("control", "accuracy", "discounted", "why"):
        assert header in out


def test_the_ingest_summary_rounds_similarity_and_counts_prefect_start(terminal, capsys):
    summary = {"root": "/data/root", "inputs": 3, "skipped_already_seen": 0, "accepted": 2,
               "rejected": 1, "reasons": {"near_duplicate": 1}, "elapsed_s": 1.234,
               "inputs_per_s": 2.4,
               "sample_duplicates": [{"file": "photos/000030.jpg", "reason": "near_duplicate",
                                      "duplicate_of": "abc", "kept_file": "photos/000013.jpg",
                                      "distance": 2, "similarity": 0.9976000189781189}]}
    print_summary(summary, wall_s=11.5)
    out = capsys.readouterr().out
    assert "0.998" in out and "0.9976000" not in out
    assert "in 1.2 s (11.5 s with Prefect's start)" in said(out)
    assert "photos/000030.jpg" in out and "photos/000013.jpg" in out  # not folded


WARNING = "split test holds 4% of the images (3), its target is 50%: subjects are ..."


def test_the_release_summary_warns_and_never_wraps_paths(terminal, capsys):
    uri = "/a/rather/long/path/to/where/the/dataset/roots/of/this/team/live/root/releases/v2"
    summary = {"version": "v2", "uri": uri, "split_images": {"train": 77, "test": 3},
               "crops": {}, "shards": 2, "crop_shards": 0,
               "splits": {"fractions": {"test": 0.0375, "train": 0.9625},
                          "target_fractions": {"test": 0.5, "train": 0.5},
                          "warnings": [WARNING]}}
    print_release(summary)
    captured = capsys.readouterr()
    assert re.search(r"test\s*│\s*3\s*│\s*4%\s*│\s*50%", captured.out)
    lines = captured.err.splitlines()
    assert any(line.startswith("warning: split test holds 4% of the images") for line in lines)
    assert f"  in {uri}" in lines and f"  report: {uri}/report/index.html" in lines
    print_release({"skipped": "exists", "version": "v2", "uri": uri})
    assert f"release v2 exists ({uri}): not published again" in capsys.readouterr().err


def test_python_m_flows_cli_runs_the_app():
    done = subprocess.run([sys.executable, "-m", "flows.cli", "--version"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == f"hagrid {version(PACKAGE)}"


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``hagrid`` process on its own Prefect home, no server set."""
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               **settings)
    env.pop("PREFECT_API_URL", None)
    return env


def test_a_temporary_server_that_does_not_start_is_one_line_with_a_hint(tmp_path):
    (tmp_path / "root").mkdir()
    env = cli_env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    done = subprocess.run([HAGRID, "publish", "--root", str(tmp_path / "root")], env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: Prefect's temporary server did not start")
    assert "PREFECT_API_URL" in line and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in line
    log = tmp_path / "temporary-server.log"  # the server's own output: kept, not on screen
    assert str(log) in line and log.exists()


SCRIPT = """\
import multiprocessing, sys
from flows.cli import _pool_workers_skip_main
from tasks.processes import imported
if __name__ == "__main__":
    if sys.argv[1] == "skip":
        _pool_workers_skip_main()
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        print(pool.apply(imported, ("flows.cli",)))
"""


@pytest.mark.parametrize(("skip", "imports_cli"), [("skip", "False"), ("keep", "True")])
def test_pool_workers_of_the_hagrid_script_do_not_import_the_cli(tmp_path, skip, imports_cli):
    """A console script like ``hagrid``: its forkserver workers run it again unless the CLI
    drops ``__main__.__file__`` (seconds of imports per worker on a busy machine)."""
    script = tmp_path / "hagrid"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), skip], capture_output=True, text=True,
                          check=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == imports_cli


def test_prefect_senders_draining_at_exit_stay_off_the_console():
    """After the command's own lines (``release_held``), Prefect's event and log senders
    may still report their queues while they drain at exit: never on the console. Run
    warnings still are."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from flows import terminal as term

    handler = PrefectConsoleHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        term.hold_run_records()
        term.release_held()
        draining = logging.LogRecord("EventsWorker", logging.WARNING, __file__, 1,
                                     "Still processing items: 1 items remaining...", None, None)
        warning = logging.LogRecord("prefect.flow_runs", logging.WARNING, __file__, 1,
                                    "split test lacks a class", None, None)
        assert not handler.filter(draining)
        assert handler.filter(warning)
    finally:
        root.removeHandler(handler)


def test_flow_runs_on_a_temporary_server_send_no_heartbeats():
    """A temporary server dies with the run: heartbeats tell it nothing and held each run's
    end back by up to a second. A configured server keeps them."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        get_current_settings,
        temporary_settings,
    )

    from flows import terminal as term

    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: True},
                            restore_defaults={PREFECT_API_URL}), \
            term.no_heartbeats_on_a_temporary_server():
        assert get_current_settings().flows.heartbeat_frequency is None
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}), \
            term.no_heartbeats_on_a_temporary_server():
        assert get_current_settings().flows.heartbeat_frequency == 180
