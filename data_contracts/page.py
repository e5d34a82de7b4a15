"""The contracts page: every expectation of a contracts run, pass or fail, on one HTML page.

A release keeps it as ``report/contracts.html`` (``schemas.release.CONTRACTS_PAGE``). It is
self-contained (inline CSS, no script, no font or image to fetch), so it reads the same
offline and years later, where Great Expectations' Data Docs beside it need the network for
their scripts and styles. The same outcomes give the same bytes: the page holds no time and
keeps the given order (tables as run, expectations in suite order).

``render_page`` is pure and imports nothing of GE; the outcomes come from
``runner.run_contracts``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_contracts.runner import ExpectationOutcome

DATA_DOCS_NOTE = (
    "Great Expectations' Data Docs load their scripts, styles and icons from CDNs (jQuery, "
    "Bootstrap, bootstrap-table, Font Awesome): without a network their list of runs stays "
    "empty, their validation pages are unstyled and the Status column shows no icon. They "
    "date every run 2000-01-01 00:00 UTC on purpose: the contracts run under that fixed run "
    "time so that the same catalog and settings give byte-identical release files. It is "
    "not when the checks ran.")

TABLE_NOTES: dict[str, str] = {  # what a row of each checked table is
    "submissions": "catalog: every input ever submitted, with its outcome and reason",
    "images": "catalog: the accepted unique images",
    "verdicts": "catalog: the aggregated crowd verdict per image and stage",
    "boxes": "catalog: the aggregated boxes (plus x2 = x + w, y2 = y + h)",
    "manifest": "release: one row per image, with the lengths of its per-box lists",
    "manifest_boxes": "release: one row per box of the manifest (plus x2, y2)",
    "manifest_users": "release: one row per user_id, with the number of splits it is in",
    "links": "release: near-duplicate links, with the split of each end",
    "shard_members": "release: the tar members found in the shards",
    "shard_check": "release: the members the manifest names, joined with those found",
    "shard_keys": "release: one row per key of the manifest or of the shards",
}
MAX_INLINE_SET = 6  # a value set this short is spelled out in the description


def render_page(outcomes: Sequence[ExpectationOutcome], *, title: str,
                links: Sequence[tuple[str, str]] = (), docs_href: str | None = None) -> str:
    """The page: verdict, links (``(href, text)``), the Data Docs note (with a link when
    ``docs_href``), the failures, a summary per table, then every expectation per table."""
    esc = html.escape
    tables = list(dict.fromkeys(o.table for o in outcomes))
    docs = (f"The <a href=\"{esc(docs_href)}\">Data Docs</a> of the same run are kept "
            "beside this page. " if docs_href else "")
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        f"<h1>{esc(title)}</h1>\n", _verdict(outcomes, tables),
        _links(links),
        f"<p class=\"note\">{docs}{esc(DATA_DOCS_NOTE)}</p>\n",
        _failures(outcomes),
        "<h2>Tables</h2>\n", _summary(outcomes, tables),
        *(_section(table, [o for o in outcomes if o.table == table]) for table in tables),
        "</body>\n</html>\n",
    ]
    return "".join(parts)


def _verdict(outcomes: Sequence[ExpectationOutcome], tables: list[str]) -> str:
    failed = [o for o in outcomes if not o.success]
    if not outcomes:
        return "<p class=\"verdict fail\">No expectation was evaluated.</p>\n"
    if not failed:
        return (f"<p class=\"verdict pass\">PASSED: all {len(outcomes)} expectations on "
                f"{len(tables)} tables.</p>\n")
    bad = len({o.table for o in failed})
    return (f"<p class=\"verdict fail\">FAILED: {len(failed)} of {len(outcomes)} "
            f"expectations, on {bad} of {len(tables)} tables.</p>\n")


def _links(links: Sequence[tuple[str, str]]) -> str:
    if not links:
        return ""
    items = "".join(f"<li><a href=\"{html.escape(href)}\">{html.escape(text)}</a></li>"
                    for href, text in links)
    return f"<ul class=\"links\">{items}</ul>\n"


def _failures(outcomes: Sequence[ExpectationOutcome]) -> str:
    rows = [(i, o) for i, o in _numbered(outcomes) if not o.success]
    if not rows:
        return ""
    items = "".join(
        f"<li><a href=\"#{_anchor(o.table, i)}\">{html.escape(o.table)} #{i}</a>: "
        f"{html.escape(describe(o.expectation, o.kwargs))}: {_count_text(o)}</li>\n"
        for i, o in rows)
    return f"<h2>Failed expectations</h2>\n<ul>\n{items}</ul>\n"


def _summary(outcomes: Sequence[ExpectationOutcome], tables: list[str]) -> str:
    head = "".join(f"<th>{h}</th>" for h in
                   ("table", "what a row is", "expectations", "passed", "failed", "status"))
    rows = []
    for table in tables:
        mine = [o for o in outcomes if o.table == table]
        failed = sum(not o.success for o in mine)
        rows.append(
            f"<tr class=\"{_kind(not failed)}\"><td><a href=\"#{_anchor(table)}\">"
            f"{html.escape(table)}</a></td><td class=\"text\">"
            f"{html.escape(TABLE_NOTES.get(table, ''))}</td><td>{len(mine)}</td>"
            f"<td>{len(mine) - failed}</td><td>{failed}</td>{_status(not failed)}</tr>\n")
    return f"<table>\n<tr>{head}</tr>\n{''.join(rows)}</table>\n"


def _section(table: str, outcomes: Sequence[ExpectationOutcome]) -> str:
    esc = html.escape
    head = "".join(f"<th>{h}</th>" for h in
                   ("#", "status", "expectation", "arguments", "observed"))
    rows = "".join(
        f"<tr id=\"{_anchor(table, i)}\" class=\"{_kind(o.success)}\"><td>{i}</td>"
        f"{_status(o.success)}<td class=\"text\">{esc(describe(o.expectation, o.kwargs))}"
        f"<br><code>{esc(o.expectation)}</code></td><td class=\"text\">{_kwargs(o.kwargs)}"
        f"</td><td class=\"text\">{_observed(o)}</td></tr>\n"
        for i, o in _numbered(outcomes))
    note = TABLE_NOTES.get(table, "")
    return (f"<h2 id=\"{_anchor(table)}\">{esc(table)}</h2>\n"
            + (f"<p>{esc(note)}</p>\n" if note else "")
            + f"<table class=\"results\">\n{_COLUMNS}\n<tr>{head}</tr>\n{rows}</table>\n")


def _numbered(outcomes: Sequence[ExpectationOutcome]) -> list[tuple[int, ExpectationOutcome]]:
    """Each outcome with its 1-based position within its table."""
    seen: dict[str, int] = {}
    numbered = []
    for o in outcomes:
        seen[o.table] = seen.get(o.table, 0) + 1
        numbered.append((seen[o.table], o))
    return numbered


def _anchor(table: str, number: int | None = None) -> str:
    return f"t-{table}" if number is None else f"t-{table}-{number}"


def _kind(success: bool) -> str:
    return "pass" if success else "fail"


def _status(success: bool) -> str:
    return f"<td class=\"status {_kind(success)}\">{'pass' if success else 'FAIL'}</td>"


# ---- cells -----------------------------------------------------------------------------

def describe(expectation: str, kwargs: Mapping[str, Any]) -> str:
    """A short sentence for an expectation and its arguments, e.g. ``0 < w``."""
    column = str(kwargs.get("column", ""))
    match expectation:
        case "expect_column_values_to_not_be_null":
            text = f"{column} is never null"
        case "expect_column_values_to_be_null":
            text = f"{column} is always null"
        case "expect_column_values_to_be_unique":
            text = f"{column} is unique"
        case "expect_compound_columns_to_be_unique":
            text = f"({', '.join(map(str, kwargs.get('column_list', [])))}) is unique"
        case "expect_column_values_to_match_regex":
            text = f"{column} matches {kwargs.get('regex')}"
        case "expect_column_values_to_be_in_set":
            text = _in_set(column, kwargs.get("value_set") or [])
        case "expect_column_values_to_be_between":
            text = _between(column, kwargs)
        case "expect_column_pair_values_to_be_equal":
            text = f"{kwargs.get('column_A')} = {kwargs.get('column_B')}"
        case _:
            text = expectation.removeprefix("expect_").replace("_", " ")
    return text + _scope(kwargs)


def _in_set(column: str, values: Sequence[Any]) -> str:
    if len(values) > MAX_INLINE_SET:
        return f"{column} is one of {len(values)} values"
    return f"{column} is one of: {', '.join(map(str, values))}"


def _between(column: str, kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    text = column
    if low is not None:
        text = f"{_number(low)} {'<' if kwargs.get('strict_min') else '≤'} {text}"
    if high is not None:
        text = f"{text} {'<' if kwargs.get('strict_max') else '≤'} {_number(high)}"
    return text


def _scope(kwargs: Mapping[str, Any]) -> str:
    """Which rows are checked: a row condition, skipped rows, a ``mostly`` share."""
    text = ""
    if kwargs.get("row_condition"):
        text += f", where {_condition(kwargs['row_condition'])}"
    if kwargs.get("ignore_row_if") not in (None, "never"):
        text += f" (rows skipped if {str(kwargs['ignore_row_if']).replace('_', ' ')})"
    if kwargs.get("mostly") not in (None, 1, 1.0):
        text += f" (in at least {float(kwargs['mostly']):.0%} of the rows)"
    return text


def _condition(condition: Any) -> str:
    """GE's row condition (``{"column": {"name": ...}, "operator": ..., "parameter": ...}``)."""
    if isinstance(condition, Mapping) and condition.get("type") == "comparison":
        name = (condition.get("column") or {}).get("name")
        return f"{name} {condition.get('operator')} {_value(condition.get('parameter'))}"
    return condition if isinstance(condition, str) else _value(condition)


def _number(value: Any) -> str:
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def _value(value: Any) -> str:
    """A JSON value as text: strings quoted, so that blanks and newlines show."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _kwargs(kwargs: Mapping[str, Any]) -> str:
    return "<br>".join(f"<code>{html.escape(k)}</code>: <code>{html.escape(_value(v))}"
                       f"</code>" for k, v in sorted(kwargs.items()))


def _count_text(outcome: ExpectationOutcome) -> str:
    """The outcome in one line: the error, or unexpected / checked rows, or the value."""
    found = outcome.observed
    if outcome.error is not None:
        return f"could not run: {html.escape(outcome.error)}"
    if "unexpected_count" in found:
        text = f"{found['unexpected_count']:,} of {found.get('element_count') or 0:,} unexpected"
        if found.get("unexpected_percent"):
            text += f" ({found['unexpected_percent']:.3g}%)"
        if found.get("missing_count"):
            text += f"; {found['missing_count']:,} null (not checked)"
        return text
    if "observed_value" in found:
        return f"observed {html.escape(_value(found['observed_value']))}"
    return "nothing reported"


def _observed(outcome: ExpectationOutcome) -> str:
    """The one-line outcome, then examples of unexpected rows (their id columns first)."""
    found = outcome.observed
    ids = [str(c) for c in found.get("unexpected_index_column_names") or []]
    samples = found.get("partial_unexpected_index_list") or found.get(
        "partial_unexpected_list") or []
    parts = [_count_text(outcome)]
    if "observed_value" in found and "unexpected_count" in found:
        parts.append(f"observed <code>{html.escape(_value(found['observed_value']))}</code>")
    if samples:
        items = "".join(f"<li><code>{html.escape(_sample(s, ids=ids))}</code></li>"
                        for s in samples)
        parts.append(f"examples:<ul class=\"samples\">{items}</ul>")
    return "<br>".join(parts)


def _sample(sample: Any, *, ids: Sequence[str]) -> str:
    if not isinstance(sample, Mapping):
        return _value(sample)
    keys = [k for k in ids if k in sample] + sorted(k for k in sample if k not in ids)
    return " ".join(f"{k}={_value(sample[k])}" for k in keys)


_COLUMNS = ("<colgroup><col style=\"width:3em\"><col style=\"width:4.5em\">"
            "<col style=\"width:27%\"><col style=\"width:38%\"><col></colgroup>")
CSS = ("body{font-family:sans-serif;max-width:76em;margin:2em auto;padding:0 1em;"
       "line-height:1.35}"
       "table{border-collapse:collapse;margin-bottom:1em}"
       "td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}"
       "th{background:#f3f3f3;text-align:left}td{text-align:right}"
       "td.text,td:first-child{text-align:left}"
       "table.results{width:100%;table-layout:fixed}"
       "table.results td:first-child{text-align:right}"
       "code{font-size:90%;overflow-wrap:anywhere}"
       "tr.fail td{background:#fff0f0}"
       ".status{font-weight:bold;text-align:center}"
       "td.status.pass,.verdict.pass{background:#dafbe1;color:#116329}"
       "td.status.fail,.verdict.fail{background:#ffd7d5;color:#a40e26}"
       ".verdict{font-size:120%;font-weight:bold;padding:.5em;border:1px solid currentColor}"
       ".note{background:#fff3cd;border:1px solid #e0c36a;padding:.5em}"
       "ul.samples{margin:.2em 0;padding-left:1.2em}"
       "ul.links li{display:inline;margin-right:1.5em}")
