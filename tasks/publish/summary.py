"""The publish flow's Prefect artifacts as Markdown: a release's counts, tables and contract
results, or why a release was refused. No I/O.

The release's files are named by their path in code spans, not linked: the Prefect UI is an
http page, from which a ``file://`` link does nothing and an ``s3://`` link means nothing to
the browser (and a presigned URL would expire while the artifact stays).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from schemas.release import (
    CONTRACTS_PAGE,
    DATA_CARD,
    DATA_DOCS,
    REPORT,
    SPLITS,
)
from tasks.markdown import markdown_text

if TYPE_CHECKING:
    from data_contracts.runner import ContractReport

MAX_FAILURES = 20  # failed expectations listed in an artifact (the page lists them all)


def code(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds."""
    text = " ".join(text.split("\n"))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Markdown table lines; the first column text, the others numbers (right-aligned)."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in rows]
    return lines


def documents(release: str) -> list[str]:
    """Where the release's documents are, as paths inside ``release`` (see the module
    docstring): short enough for the UI's table, which clips long cells."""
    rows = [("quality report", f"{REPORT}/index.html"),
            ("data contracts: every expectation (one self-contained page)",
             f"{REPORT}/{CONTRACTS_PAGE}"),
            ("data card", DATA_CARD),
            ("Great Expectations Data Docs (their scripts need a network)",
             f"{DATA_DOCS}/index.html")]
    where = ("Open them where the dataset root lives: the Prefect UI cannot link to local "
             "or S3 files.")
    return [f"Documents, inside {code(release)}:", "", "| document | path in the release |",
            "|---|---|", *(f"| {name} | {code(path)} |" for name, path in rows), "", where]


def contracts_lines(tally: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The contracts' verdict and a passed / failed row per table."""
    passed = sum(c["passed"] for c in tally.values())
    failed = sum(c["failed"] for c in tally.values())
    verdict = (f"All **{passed}** expectations passed on {len(tally)} tables." if not failed
               else f"**{failed}** of {passed + failed} expectations failed.")
    rows = [(t, c["passed"], c["failed"]) for t, c in tally.items()]
    return [verdict, "", *_table(("table", "passed", "failed"), rows)]


def release_markdown(summary: Mapping[str, Any]) -> str:
    """The ``release-summary`` artifact: where the release is, per-split and per-class
    tables, the contracts per table. ``summary`` is the publish flow's result."""
    splits = [s for s in SPLITS if s in summary["split_images"]]
    subjects = summary.get("split_subjects", {})
    split_rows = [(s, summary["split_images"][s], subjects.get(s, 0)) for s in splits]
    class_rows = [(g, *(row.get(s, 0) for s in splits), sum(row.values()))
                  for g, row in summary["counts"].items()]
    crops = sum(summary.get("crops", {}).values())
    lines = [
        f"# Release {markdown_text(summary['version'])}", "",
        f"**{summary['images']}** images in {summary['shards']} shards"
        + (f", {crops} hand crops" if crops else "") + f" at {code(summary['uri'])}.", "",
        *documents(summary["uri"]), "",
        "## Splits", "", *_table(("split", "images", "subjects"), split_rows), "",
        "## Images per class and split", "",
        *_table(("class", *splits, "total"), class_rows), "",
        "## Data contracts", "", *contracts_lines(summary.get("contracts", {})),
    ]
    return "\n".join(lines) + "\n"


def refused_markdown(version: str, report: ContractReport, *, kept: str) -> str:
    """The ``release-refused`` artifact: the failed expectations and where the contracts
    page and the Data Docs of the refused run were kept (``kept``, a folder)."""
    failures = [f"- {markdown_text(f.table)}: {code(f.expectation)}"
                + (f" on {code(f.column)}" if f.column else "") + f": {markdown_text(f.detail)}"
                for f in report.failures[:MAX_FAILURES]]
    if len(report.failures) > MAX_FAILURES:
        failures.append(f"- ... and {len(report.failures) - MAX_FAILURES} more (see the page)")
    lines = [
        f"# Release {markdown_text(version)} refused", "",
        "The data contracts failed: nothing was written under the release's folder.", "",
        f"- contracts page: {code(f'{kept}/{REPORT}/{CONTRACTS_PAGE}')}",
        f"- Data Docs: {code(f'{kept}/{DATA_DOCS}/index.html')}", "",
        "## Failed expectations", "", *failures, "",
        "## Data contracts", "", *contracts_lines(report.tally()),
    ]
    return "\n".join(lines) + "\n"


def split_shares(shares: dict[str, float], targets: dict[str, float]) -> str:
    """Each split's share of the images against its target, in ``SPLITS`` order, for the
    run log: ``train 76.2% (target 76%), val 9.0% (target 9%), test 14.8% (target 15%)``."""
    return ", ".join(f"{name} {shares.get(name, 0.0):.1%} (target {100 * targets[name]:.4g}%)"
                     for name in SPLITS if name in targets)
