"""The stage report: verdict counts, queue sizes, rejected answers, quarantined answer
tables, the worker quality table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from schemas.crowd import Stage
from tasks.crowd.queue import StagePlan
from tasks.markdown import markdown_text


def stage_report(stage: Stage, *, verdicts: pd.DataFrame, plan: StagePlan,
                 quality: pd.DataFrame, new_answers: pd.DataFrame, pushed: int,
                 method: str, backend: str,
                 quarantined: Mapping[str, Mapping[str, str]] | None = None,
                 imported: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A JSON-ready summary of one stage run (``verdicts`` is the latest per image).

    ``quarantined``: answer tables moved to quarantine in this run (quarantine key -> note
    with the inbox ``file`` and the ``reason``); ``imported``: inbox key -> the file given
    with ``--answers``, so the report names the file the user knows.
    """
    rejected = new_answers.loc[new_answers["status"] == "rejected", "reason"].value_counts()
    workers = quality.reset_index().rename(columns={"index": "worker_id"}).round(3)
    names = imported or {}
    return {
        "stage": stage.value, "backend": backend, "method": method,
        "verdicts": {str(k): int(v) for k, v in verdicts["verdict"].value_counts().items()},
        "verdict_reasons": {str(k): int(v) for k, v in
                            verdicts["reason"].dropna().value_counts().items()},
        "queue": dict(sorted(plan.status.items())),
        "pushed": pushed,
        "answers_pulled": len(new_answers),
        "answers_rejected": {str(k): int(v) for k, v in sorted(rejected.items())},
        "quarantined": [{"file": names.get(note["file"], note["file"]), "moved_to": key,
                         "reason": note["reason"]} for key, note in (quarantined or {}).items()],
        "workers": workers.astype(object).where(workers.notna(), None).to_dict("records"),
        "discounted_workers": sorted(quality.index[quality["discounted"]].tolist())
        if "discounted" in quality else [],
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown of a Prefect artifact (every value escaped: worker ids and
    file names come from outside)."""
    md = markdown_text
    lines = [f"# {md(report['stage'])} ({md(report['backend'])}, method {md(report['method'])})",
             "", "| verdict | images |", "|---|---|"]
    lines += [f"| {md(k)} | {v} |" for k, v in report["verdicts"].items()]
    lines += ["", "| queue state this run | images |", "|---|---|"]
    lines += [f"| {md(k)} | {v} |" for k, v in report["queue"].items()]
    rejected = ", ".join(f"{md(k)}: {v}" for k, v in report["answers_rejected"].items())
    lines += ["", (f"answers pulled: {report['answers_pulled']}, rejected: "
              f"{rejected or 'none'}; tasks pushed: {report['pushed']}"), ""]
    if "label_reviews_sent" in report:
        lines += [(f"flagged labels (hagrid audit): sent to review "
                   f"{report['label_reviews_sent']}, decided by review "
                   f"{report['label_reviews_decided']}"), ""]
    if report.get("quarantined"):
        lines += ["| answer table quarantined | moved to | why |", "|---|---|---|"]
        lines += [f"| {md(q['file'])} | {md(q['moved_to'])} | {md(q['reason'])} |"
                  for q in report["quarantined"]]
        lines.append("")
    if report.get("agreement"):
        lines += ["| agreement (mean IoU) | images |", "|---|---|"]
        lines += [f"| {md(k)} | {v} |" for k, v in report["agreement"].items()]
        lines.append("")
    if report["workers"]:
        cols = list(report["workers"][0])
        lines += ["| " + " | ".join(map(md, cols)) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(md(w[c]) for c in cols) + " |" for w in report["workers"]]
    return "\n".join(lines) + "\n"
