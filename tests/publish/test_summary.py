"""The publish flow's Prefect artifacts: tables, contract results and paths as text."""

from __future__ import annotations

from data_contracts.runner import ContractFailure, ContractReport, ExpectationOutcome
from tasks.publish.summary import code, refused_markdown, release_markdown

SUMMARY = {
    "version": "v1", "uri": "/data/root/releases/v1", "images": 7, "shards": 2,
    "split_images": {"train": 5, "test": 2}, "split_subjects": {"train": 3, "test": 1},
    "counts": {"call": {"train": 3, "test": 1}, "like": {"train": 2, "test": 1}},
    "crops": {}, "contracts": {"manifest": {"passed": 19, "failed": 0},
                               "links": {"passed": 1, "failed": 0}},
}


def test_release_markdown_has_the_tables_and_paths_as_text() -> None:
    text = release_markdown(SUMMARY)
    assert "| train | 5 | 3 |" in text and "| test | 2 | 1 |" in text
    assert "| class | train | test | total |" in text and "| call | 3 | 1 | 4 |" in text
    assert "All **20** expectations passed on 2 tables." in text
    assert "| manifest | 19 | 0 |" in text
    assert "Documents, inside `/data/root/releases/v1`:" in text
    assert "| `report/contracts.html` |" in text and "| `data_docs/index.html` |" in text
    assert "file://" not in text and "](" not in text  # no dead links


def _outcome(table: str, success: bool) -> ExpectationOutcome:
    return ExpectationOutcome(table=table, expectation="expect_column_values_to_be_unique",
                              kwargs={"column": "image_id"}, success=success, observed={},
                              error=None)


def test_refused_markdown_lists_the_failed_expectations() -> None:
    failure = ContractFailure(table="manifest", expectation="expect_column_values_to_be_unique",
                              column="image_id", detail="1 of 60 unexpected, e.g. <x> | `y`")
    report = ContractReport(success=False, failures=[failure], checked={"manifest": 2},
                            results=[_outcome("manifest", True), _outcome("manifest", False)])
    text = refused_markdown("v2", report, kept="s3://b/releases/.refused-v2")
    assert "# Release v2 refused" in text
    assert "`s3://b/releases/.refused-v2/report/contracts.html`" in text
    assert "- manifest: `expect_column_values_to_be_unique` on `image_id`: 1 of 60" in text
    assert "&lt;x&gt; \\| \\`y\\`" in text  # the detail is literal text
    assert "**1** of 2 expectations failed." in text and "| manifest | 1 | 1 |" in text


def test_code_spans_hold_any_backticks() -> None:
    assert code("a/b") == "`a/b`"
    assert code("a`b") == "``a`b``"
    assert code("`a") == "`` `a ``"
