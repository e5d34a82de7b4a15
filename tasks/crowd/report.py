"""The stage report: verdict counts, queue sizes, rejected answers, the worker quality table."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from schemas.crowd import Stage
from tasks.crowd.queue import StagePlan


def stage_report(stage: Stage, *, verdicts: pd.DataFrame, plan: StagePlan,
                 quality: pd.DataFrame, new_answers: list[dict[str, Any]], pushed: int,
                 method: str, backend: str) -> dict[str, Any]:
    """A JSON-ready summary of one stage run (``verdicts`` is the latest per image)."""
    rejected = Counter(r["reason"] for r in new_answers if r["status"] == "rejected")
    workers = quality.reset_index().rename(columns={"index": "worker_id"}).round(3)
    return {
        "stage": stage.value, "backend": backend, "method": method,
        "verdicts": {str(k): int(v) for k, v in verdicts["verdict"].value_counts().items()},
        "verdict_reasons": {str(k): int(v) for k, v in
                            verdicts["reason"].dropna().value_counts().items()},
        "queue": dict(sorted(plan.status.items())),
        "pushed": pushed,
        "answers_pulled": len(new_answers),
        "answers_rejected": dict(sorted(rejected.items())),
        "workers": workers.astype(object).where(workers.notna(), None).to_dict("records"),
        "discounted_workers": sorted(quality.index[quality["discounted"]].tolist())
        if "discounted" in quality else [],
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown of a Prefect artifact."""
    lines = [f"# {report['stage']} ({report['backend']}, method {report['method']})", "",
             "| verdict | images |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["verdicts"].items()]
    lines += ["", "| queue state this run | images |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["queue"].items()]
    lines += ["", (f"answers pulled: {report['answers_pulled']}, rejected: "
              f"{report['answers_rejected'] or 'none'}; tasks pushed: {report['pushed']}"), ""]
    if report.get("agreement"):
        lines += ["| agreement (mean IoU) | images |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["agreement"].items()]
        lines.append("")
    if report["workers"]:
        cols = list(report["workers"][0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(w[c]) for c in cols) + " |" for w in report["workers"]]
    return "\n".join(lines) + "\n"
