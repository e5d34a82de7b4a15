"""The run summary of an ingest run: counts per outcome and reason, sample duplicate pairs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from tasks.ingest.steps import is_duplicate_reason
from tasks.markdown import markdown_text


def summarize_run(submissions: list[pa.Table], *, kept_files: dict[str, str], skipped: int,
                  elapsed_s: float, samples: int = 8) -> dict[str, Any]:
    """Counts per outcome and per reason over this run's rows, and a few duplicate pairs."""
    rows = [r for t in submissions for r in t.select(
        ["file", "outcome", "reason", "duplicate_of", "duplicate_distance",
         "duplicate_similarity"]).to_pylist()]
    outcomes = Counter(r["outcome"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["reason"])
    pairs = [
        {"file": r["file"], "reason": r["reason"], "duplicate_of": r["duplicate_of"],
         "kept_file": kept_files.get(r["duplicate_of"] or ""),
         "distance": r["duplicate_distance"],
         "similarity": _similarity(r["duplicate_similarity"])}
        for r in rows if is_duplicate_reason(r["reason"])
    ]
    pairs = _spread(pairs, samples)
    return {
        "inputs": len(rows), "skipped_already_seen": skipped,
        "accepted": outcomes.get("accepted", 0), "rejected": outcomes.get("rejected", 0),
        "reasons": dict(sorted(reasons.items())), "sample_duplicates": pairs,
        "elapsed_s": round(elapsed_s, 3),
        "inputs_per_s": round(len(rows) / elapsed_s, 1) if elapsed_s > 0 else None,
    }


def _similarity(value: float | None) -> float | None:
    """Stored as float32: 0.9976 reads back as 0.9976000189781189; 4 decimals say it."""
    return None if value is None else round(float(value), 4)


def _spread(pairs: list[dict], n: int) -> list[dict]:
    """Up to n pairs, one of each reason first."""
    first: dict[str, dict] = {}
    for p in pairs:
        first.setdefault(p["reason"], p)
    chosen = list(first.values())
    chosen += [p for p in pairs if p not in chosen][: max(0, n - len(chosen))]
    return chosen[:n]


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown, for the Prefect artifact."""
    lines = [
        "# Ingest run summary", "",
        f"- inputs: **{summary['inputs']}** (already seen, skipped: {summary['skipped_already_seen']})",
        f"- accepted: **{summary['accepted']}**, rejected: **{summary['rejected']}**",
        f"- elapsed: {summary['elapsed_s']} s ({summary['inputs_per_s']} inputs/s)", "",
        "| reason | count |", "|---|---:|",
    ]
    lines += [f"| {markdown_text(k)} | {v} |" for k, v in summary["reasons"].items()]
    if summary["sample_duplicates"]:
        lines += ["", "## Sample duplicate pairs", "",
                  "| file | reason | kept image | kept file | distance | similarity |",
                  "|---|---|---|---|---:|---:|"]
        lines += [
            f"| {markdown_text(p['file'])} | {markdown_text(p['reason'])} "
            f"| {markdown_text(p['duplicate_of'])} | {markdown_text(p['kept_file'] or '')} "
            f"| {p['distance']} | {p['similarity']} |"
            for p in summary["sample_duplicates"]
        ]
    return "\n".join(lines) + "\n"
