"""The stage report: verdict counts, queue sizes, rejected answers, quarantined answer
tables, the worker quality table."""

from __future__ import annotations

import math
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
                 imported: Mapping[str, str] | None = None,
                 discount_rule: str | None = None) -> dict[str, Any]:
    """A JSON-ready summary of one stage run (``verdicts`` is the latest per image).

    ``quarantined``: answer tables moved to quarantine in this run (quarantine key -> note
    with the inbox ``file`` and the ``reason``); ``imported``: inbox key -> the file given
    with ``--answers``, so the report names the file the user knows. ``discount_rule``:
    when workers are discounted, in words (``consensus.discount_rule``).
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
        "discount_rule": discount_rule if "discounted" in quality else None,
    }


# how the worker table names each column of the quality tables (crowd stages:
# ``consensus.worker_quality``, annotation: ``annotate.consensus.annotator_quality``), in
# the order shown; ``golden_min_side`` is told by ``discount_reason`` instead
WORKER_COLUMNS: dict[str, str] = {
    "worker_id": "worker", "n_answers": "answers", "n_golden": "control answers",
    "golden_accuracy": "control accuracy", "discounted": "discounted",
    "discount_reason": "why", "n_images": "images", "n_boxes": "boxes", "n_hands": "hands",
    "n_matched": "hands drawn", "mean_iou": "mean IoU", "label_accuracy": "label accuracy",
    "leading_accuracy": "leading hand accuracy", "missed_rate": "missed hands",
    "extra_rate": "extra boxes",
}


def worker_table(workers: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The report's worker rows for people: headers in words, yes/no, two decimals, ``-``
    for no value; columns in ``WORKER_COLUMNS`` order (others after, as named)."""
    if not workers:
        return [], []
    present = list(dict.fromkeys(k for w in workers for k in w))
    keys = [k for k in WORKER_COLUMNS if k in present]
    keys += [k for k in present if k not in WORKER_COLUMNS and k != "golden_min_side"]
    rows = [[_worker_cell(w.get(k)) for k in keys] for w in workers]
    return [WORKER_COLUMNS.get(k, k) for k in keys], rows


def _worker_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


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
    headers, rows = worker_table(report["workers"])
    if headers:
        lines += ["| " + " | ".join(map(md, headers)) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(map(md, row)) + " |" for row in rows]
        if report.get("discount_rule"):
            lines += ["", md(report["discount_rule"])]
    return "\n".join(lines) + "\n"
