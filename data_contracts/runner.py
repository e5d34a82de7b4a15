"""Run the data contracts with Great Expectations and build reproducible Data Docs.

Each table is validated in a throwaway file data context (a temporary folder): one pandas
dataframe asset, suite and validation definition per table, all under a fixed run id, so
the same frames give the same results and, through the views below, byte-identical Data
Docs. Nothing is kept but the report (every expectation's outcome, for ``page`` and
``contracts.json``) and, when asked, the Data Docs folder.

The fixed run time (``RUN_TIME``, 2000-01-01) is why the Data Docs show every run on that
date: GE writes the run time into the pages and their paths, so a real clock would make two
builds of the same release differ.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no network: set before GX is imported

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context import AbstractDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.datasource.fluent import PandasDatasource
from great_expectations.render.renderer import SiteIndexPageRenderer
from great_expectations.render.view import DefaultJinjaPageView
from jinja2 import pass_context

from data_contracts.suites import ID_COLUMNS, Expectations, build_suites, prepare_tables
from schemas.taxonomy import Taxonomy

RUN_TIME = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)  # every run: docs reproducible
DATASOURCE = "contracts"
SITE = "local_site"
SITE_FOLDER = Path("uncommitted", "data_docs", SITE)  # under the context's root directory
MAX_SAMPLES = 5  # sample values quoted in a failure's detail
MAX_SUMMARY_LINES = 20
# The parts of GE's result an outcome keeps (GE's other keys restate these as percentages).
OBSERVED_KEYS: tuple[str, ...] = (
    "observed_value", "element_count", "missing_count", "unexpected_count",
    "unexpected_percent", "partial_unexpected_list", "partial_unexpected_index_list",
    "unexpected_index_column_names")


@dataclass(frozen=True)
class ContractFailure:
    """One expectation that failed: where, what, and a few of the values that broke it."""

    table: str  # which frame: images, manifest, manifest_boxes, shard_check, ...
    expectation: str  # GE expectation type, e.g. expect_column_values_to_be_unique
    column: str | None  # the column(s) it checked, as text
    detail: str  # unexpected count and a few sample values, or the error


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation as evaluated, in plain JSON values (``contracts.json``, the page)."""

    table: str
    expectation: str  # GE expectation type
    kwargs: dict[str, Any]  # as configured (GE's batch_id left out)
    success: bool
    observed: dict[str, Any]  # the ``OBSERVED_KEYS`` GE reported
    error: str | None  # first line of the exception when the check could not run


@dataclass(frozen=True)
class ContractReport:
    """The outcome of a contracts run."""

    success: bool
    failures: list[ContractFailure]
    checked: dict[str, int]  # table -> number of expectations evaluated
    results: list[ExpectationOutcome] = field(default_factory=list)  # suite order per table

    def tally(self) -> dict[str, dict[str, int]]:
        """Per table (in ``checked`` order): expectations ``passed`` and ``failed``."""
        counts = {t: {"passed": 0, "failed": 0} for t in self.checked}
        for r in self.results:
            counts.setdefault(r.table, {"passed": 0, "failed": 0})[
                "passed" if r.success else "failed"] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        """``contracts.json``: success, the tally per table and every outcome."""
        return {"success": self.success, "tables": self.tally(),
                "results": [dataclasses.asdict(r) for r in self.results]}

    def summary(self) -> str:
        """A few lines listing the failures, for an exception message or a log."""
        total = sum(self.checked.values())
        head = (f"data contracts: {len(self.failures)} of {total} expectations failed "
                f"on {len(self.checked)} tables")
        lines = [f"- {f.table}: {f.expectation}({f.column or ''}): {f.detail}"
                 for f in self.failures[:MAX_SUMMARY_LINES]]
        if len(self.failures) > MAX_SUMMARY_LINES:
            lines.append(f"- ... and {len(self.failures) - MAX_SUMMARY_LINES} more")
        return "\n".join([head, *lines])


# ---- Data Docs views -----------------------------------------------------------------------

class StablePageView(DefaultJinjaPageView):
    """The default page view, but the output depends on the page only: collapsible element
    ids count up per page instead of being random UUIDs, and the logo URL carries no
    timestamp or data context id."""

    _element_ids: Iterator[int] = itertools.count(1)

    def render(self, document: Any, template: Any = None, **kwargs: Any) -> Any:
        self._element_ids = itertools.count(1)
        return super().render(document, template, **kwargs)

    def generate_html_element_uuid(self, prefix: str | None = None) -> str:
        return f"{prefix or ''}{next(self._element_ids)}"

    @pass_context
    def add_data_context_id_to_url(self, jinja_context: Any, url: str,
                                   add_datetime: bool = True) -> str:
        return url


class StableIndexPageView(StablePageView):
    """The index page, with ``StablePageView``'s stable ids."""

    _template = "index_page.j2"


class SortedIndexPageRenderer(SiteIndexPageRenderer):
    """The index page renderer, with its link lists sorted by file path: GE lists them in
    directory-listing order, which differs between file systems."""

    @classmethod
    def render(cls, index_links_dict: dict[str, Any]) -> Any:
        for name, links in index_links_dict.items():
            if name.endswith("_links") and isinstance(links, list):
                links.sort(key=lambda link: str(link.get("filepath")))
        return super().render(index_links_dict)


def _site_config() -> dict[str, Any]:
    def here(name: str) -> dict[str, str]:  # a class of this module
        return {"module_name": __name__, "class_name": name}

    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": f"{SITE_FOLDER.as_posix()}/"},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                               "renderer": here(SortedIndexPageRenderer.__name__),
                               "view": here(StableIndexPageView.__name__)},
        "site_section_builders": {
            section: {"view": here(StablePageView.__name__)}
            for section in ("expectations", "validations", "profiling")},
    }


# ---- running -------------------------------------------------------------------------------

def _context(root: Path) -> AbstractDataContext:
    context = gx.get_context(mode="file", project_root_dir=root)
    context.variables.progress_bars = ProgressBarsConfig(
        globally=False, metric_calculations=False)
    context.update_data_docs_site(SITE, _site_config())  # type: ignore[arg-type]
    return context


def _result_format(table: str, frame: pd.DataFrame) -> dict[str, Any]:
    ids = [ID_COLUMNS[table]] if ID_COLUMNS.get(table) in frame.columns else []
    return {"result_format": "SUMMARY", "unexpected_index_column_names": ids}


def _validate(context: AbstractDataContext, source: PandasDatasource, table: str,
              frame: pd.DataFrame, *, expectations: Expectations,
              run_id: RunIdentifier) -> ExpectationSuiteValidationResult:
    asset = source.add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe(table)
    suite = context.suites.add(gx.ExpectationSuite(name=table, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=table, data=batch, suite=suite))
    return definition.run(batch_parameters={"dataframe": frame}, run_id=run_id,
                          result_format=_result_format(table, frame))


def _pin_load_times(context: AbstractDataContext) -> None:
    """Stored results carry the batch's load time (``ge_load_time``, shown in Data Docs):
    set it to the fixed run time so that the docs do not depend on when they were built."""
    store = context.validation_results_store
    stamp = RUN_TIME.strftime("%Y%m%dT%H%M%S.%fZ")
    for key in store.list_keys():
        result = store.get(key)
        if result is None:
            continue
        result.meta.setdefault("batch_markers", {})["ge_load_time"] = stamp
        store.set(key, result)


def _build_docs(context: AbstractDataContext, docs_dir: Path) -> None:
    _pin_load_times(context)
    context.build_data_docs(site_names=[SITE])
    site = Path(str(context.root_directory)) / SITE_FOLDER
    shutil.copytree(site, docs_dir, dirs_exist_ok=True, copy_function=shutil.copyfile)


def run_contracts(frames: Mapping[str, pd.DataFrame], *, taxonomy: Taxonomy,
                  docs_dir: Path | None = None, run_name: str = "release") -> ContractReport:
    """Validate every table derivable from ``frames`` (see ``suites.prepare_tables``).

    ``docs_dir``: also build the Data Docs there (``docs_dir/index.html``); the same
    frames and ``run_name`` give byte-identical files. Never raises on a failed
    expectation: the report says what failed.
    """
    tables = prepare_tables(frames)
    suites = build_suites(taxonomy)
    run_id = RunIdentifier(run_name=run_name, run_time=RUN_TIME)
    with tempfile.TemporaryDirectory(prefix="contracts-") as tmp:
        context = _context(Path(tmp))
        source = context.data_sources.add_pandas(DATASOURCE)
        results = {table: _validate(context, source, table, frame,
                                    expectations=suites[table], run_id=run_id)
                   for table, frame in tables.items()}
        if docs_dir is not None:
            _build_docs(context, Path(docs_dir))
    failures = [f for table, result in results.items() for f in _failures(table, result)]
    return ContractReport(success=not failures, failures=failures,
                          checked={t: len(r.results) for t, r in results.items()},
                          results=[o for t, r in results.items() for o in _outcomes(t, r)])


# ---- report --------------------------------------------------------------------------------

def _failures(table: str, result: ExpectationSuiteValidationResult) -> list[ContractFailure]:
    return [ContractFailure(table=table, expectation=r.expectation_config.type,
                            column=_columns(r.expectation_config.kwargs),
                            detail=_detail(r, id_column=ID_COLUMNS.get(table)))
            for r in result.results if not r.success and r.expectation_config is not None]


def _outcomes(table: str, result: ExpectationSuiteValidationResult
              ) -> list[ExpectationOutcome]:
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        if config is None:
            continue
        found = r.result or {}
        outcomes.append(ExpectationOutcome(
            table=table, expectation=config.type,
            kwargs=_json_plain({k: v for k, v in config.kwargs.items() if k != "batch_id"}),
            success=bool(r.success),
            observed=_json_plain({k: found[k] for k in OBSERVED_KEYS if k in found}),
            error=_error(r)))
    return outcomes


def _json_plain(value: Any) -> Any:
    """``value`` as JSON values: numpy scalars unwrapped, NaN and infinities as text,
    anything else unknown as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_plain(v) for v in value]
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None if value is pd.NA or value is pd.NaT else str(value)


def _columns(kwargs: Mapping[str, Any]) -> str | None:
    names = kwargs.get("column_list") or [
        kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    return ", ".join(str(n) for n in names) or None


def _error(result: ExpectationValidationResult) -> str | None:
    info = result.exception_info or {}
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for item in candidates:
        if item.get("raised_exception"):
            lines = str(item.get("exception_message") or "unknown error").strip().splitlines()
            return (lines or ["unknown error"])[0][:300]
    return None


def _detail(result: ExpectationValidationResult, *, id_column: str | None) -> str:
    error = _error(result)
    if error is not None:
        return f"error: {error}"
    outcome = result.result or {}
    if "unexpected_count" not in outcome:
        return f"observed {_plain(outcome.get('observed_value'))!r}"
    samples = outcome.get("partial_unexpected_index_list") or outcome.get(
        "partial_unexpected_list") or []
    shown = "; ".join(_sample(s, id_column=id_column) for s in samples[:MAX_SAMPLES])
    return (f"{outcome['unexpected_count']} of {outcome.get('element_count')} unexpected, "
            f"e.g. {shown}")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalar -> Python


def _sample(sample: Any, *, id_column: str | None) -> str:
    if not isinstance(sample, dict):
        return repr(_plain(sample))
    items = sorted(sample.items(), key=lambda item: item[0] != id_column)  # the id first
    return " ".join(f"{k}={_plain(v)!r}" for k, v in items)
