"""Hostile and heavy input to the crowd stages (issue 11): bad answer tables go to quarantine,
rejected answers are recorded once, a later run reads only what it needs, worker ids are
compared one way, and outside text is escaped in the Markdown reports."""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from flows.cli import app
from flows.crowd import filter_stage, validate
from schemas.crowd import AnswerReason, CrowdBackendOptions, Stage, Verdict
from tasks.catalog import Catalog
from tasks.crowd.answers import AnswerError, RawAnswer, canonical_answer, screen_answers
from tasks.crowd.backends import (
    FileCrowd,
    answer_table_frame,
    file_answer_id,
    inbox_prefix,
    quarantine_prefix,
    table_id,
)
from tasks.crowd.queue import Decision
from tasks.crowd.report import report_markdown
from tasks.crowd.stage import answer_table, latest_verdicts, load_stage, verdict_table
from tasks.ingest.summary import summary_markdown
from tasks.markdown import markdown_text
from tasks.storage import LocalStorage
from tests.catalogs import make_catalog

HOSTILE = "a|b*_[x](javascript:alert(1))<img>.jpg"
NESTED = b"[" * 400_000  # a JSONL "row" that exhausts the recursion limit of json.loads


def _table(root: Path, name: str) -> pd.DataFrame:
    return Catalog(LocalStorage(root)).read_table(name).to_pandas()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    return path


def _keys(root: Path, prefix: str) -> list[str]:
    return sorted(LocalStorage(root).list(prefix))


# ---- 9: bad answer tables go to quarantine ------------------------------------------------

GOOD = b"image_id,worker_id,answer\nimg1,w1,yes\nimg2,w1,no:other\n"


@pytest.mark.parametrize("name, data, why", [
    ("deep.jsonl", NESTED, "nested deeper than"),
    ("deep-valid.jsonl", b'{"image_id": "i", "worker_id": "w", "answer": '
     + b"[" * 40 + b"]" * 40 + b"}\n", "nested deeper than"),
    ("latin1.csv", "image_id,worker_id,answer\nimg1,w\xf6rker,yes\n".encode("latin-1"), "UTF-8"),
    ("columns.csv", b"image_id,answer\nimg1,yes\n", "missing: worker_id"),
    ("broken.jsonl", b'{"image_id": "img1", "worker_id": "w1", "answer": "yes"}\n{"image_id"\n',
     "line 2"),
    ("empty.csv", b"", "empty"),
    ("no-rows.jsonl", b"[1, 2]\n", "no JSON object with the fields"),
])
def test_a_bad_answer_table_is_quarantined_with_its_reason(tmp_path, name, data, why):
    root = LocalStorage(tmp_path)
    inbox = inbox_prefix(Stage.VALIDATION)
    root.write_bytes(f"{inbox}/{name}", data)
    root.write_bytes(f"{inbox}/good.csv", GOOD)
    raw = FileCrowd(root).pull(Stage.VALIDATION)
    moved = f"{quarantine_prefix(Stage.VALIDATION)}/{name}"
    bad = raw[raw["unreadable"].notna()]
    assert len(bad) == 1 and len(raw) == 3  # the good table is read all the same
    assert f"quarantined as {moved}" in bad["unreadable"].iat[0]
    assert why in bad["unreadable"].iat[0]
    assert _keys(tmp_path, inbox) == [f"{inbox}/good.csv"]
    assert root.read_bytes(moved) == data
    note = json.loads(root.read_bytes(f"{moved}.reason.json"))
    assert note["file"] == f"{inbox}/{name}" and why in note["reason"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_nested_answer_file_is_quarantined_and_later_runs_go_on(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=2, seed=21)
    validate(root=str(root), crowd="file")  # push
    nested = tmp_path / "nested.jsonl"
    nested.write_bytes(NESTED)
    good = _write_csv(tmp_path / "good.csv", ["image_id", "worker_id", "answer"],
                      [[i, w, "yes"] for i in ids for w in ("w1", "w2", "w3")])
    opts = CrowdBackendOptions(kind="file", answers=(str(nested), str(good)))
    report = validate(root=str(root), crowd="file", options=opts, method="mv")
    [q] = report["quarantined"]
    assert q["file"] == str(nested) and "nested deeper than" in q["reason"]
    assert q["moved_to"].startswith("crowd/validation/quarantine/")
    assert report["answers_pulled"] == 7 and report["answers_rejected"] == {"unreadable": 1}
    assert "quarantine" in report_markdown(report)
    again = validate(root=str(root), crowd="file", method="mv")
    assert again["quarantined"] == [] and again["answers_pulled"] == 0
    assert set(latest_verdicts(Catalog(LocalStorage(root)), Stage.VALIDATION).index) == set(ids)


@pytest.mark.usefixtures("prefect_harness")
def test_the_cli_says_the_answer_file_was_quarantined_and_why(tmp_path):
    root = tmp_path / "root"
    make_catalog(root, n=2, seed=22)
    nested = tmp_path / "answers.jsonl"
    nested.write_bytes(NESTED)
    result = CliRunner().invoke(app, ["validate", "--root", str(root), "--crowd", "file",
                                      "--answers", str(nested)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert f"answer table {nested} was quarantined" in said
    assert "nested deeper than 32 levels" in said
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_a_deeply_nested_annotation_answer_is_rejected_not_raised():
    with pytest.raises(AnswerError) as info:
        canonical_answer(Stage.ANNOTATION, "[" * 5000 + "]" * 5000)
    assert info.value.reason is AnswerReason.UNREADABLE and "nested" in info.value.detail


# ---- 10: a rejected answer is recorded once -----------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_rejected_answers_are_recorded_once_over_five_runs(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=4, seed=23)
    validate(root=str(root), crowd="file")  # push
    header = ["image_id", "worker_id", "answer", "reason", "queue", "stage"]
    rows = [
        [ids[0], "w1", "yes", "", "crowd", "validation"],  # accepted
        [ids[0], "w2", "no", "wrong_gesture", "", ""],  # accepted (defaults)
        [ids[1], "w1", "none", "", "crowd", "filtration"],  # wrong_stage
        [ids[1], "w2", "perhaps", "", "crowd", "validation"],  # unknown_choice
        [ids[2], "", "yes", "", "crowd", "validation"],  # missing_field
        ["not-an-image", "w1", "yes", "", "crowd", "validation"],  # unknown_image
        [ids[0], "w1", "no", "other", "crowd", "validation"],  # duplicate_answer
        [ids[2], "w3", "yes", "", "later", "validation"],  # unknown_choice (queue)
        [ids[3], "w9", "yes", "", "review", "validation"],  # unknown_image (not in review)
    ]
    answers = _write_csv(tmp_path / "answers.csv", header, rows)
    opts = CrowdBackendOptions(kind="file", answers=(str(answers),))
    reports = [validate(root=str(root), crowd="file", options=opts, method="mv")
               for _ in range(5)]
    stored = _table(root, "answers")
    assert len(stored) == len(rows) and stored["answer_id"].is_unique
    assert stored["reason"].value_counts().to_dict() == {
        "unknown_choice": 2, "unknown_image": 2, "wrong_stage": 1, "missing_field": 1,
        "duplicate_answer": 1}
    assert [r["answers_pulled"] for r in reports] == [len(rows), 0, 0, 0, 0]
    assert set(stored["stage"]) == {"validation"}  # recorded by the stage that screened it


@pytest.mark.usefixtures("prefect_harness")
def test_one_answer_file_for_both_stages_feeds_each_stage_its_own_rows(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=3, seed=24)
    catalog = Catalog(LocalStorage(root))
    now = dt.datetime.now(dt.UTC)
    accepted = [Decision(i, Verdict.ACCEPTED, None, 1.0, 3, "mv") for i in ids]
    catalog.write_batch("00001-valid", {"verdicts": verdict_table(
        Stage.VALIDATION, accepted, batch_id="00001-valid", now=now)}, info={})
    filter_stage(root=str(root), crowd="file")  # push the 3 images to filtration
    rows = [[i, w, "none", "filtration"] for i in ids for w in ("w1", "w2", "w3")]
    rows += [[i, "w1", "yes", "validation"] for i in ids]
    both = _write_csv(tmp_path / "both.csv", ["image_id", "worker_id", "answer", "stage"], rows)
    opts = CrowdBackendOptions(kind="file", answers=(str(both),))
    valid = validate(root=str(root), crowd="file", options=opts, method="mv")
    assert valid["answers_rejected"] == {"unknown_image": 3, "wrong_stage": 9}
    filt = filter_stage(root=str(root), crowd="file", options=opts, method="mv")
    assert filt["answers_rejected"] == {"wrong_stage": 3}
    stored = _table(root, "answers")
    ok = stored[(stored["stage"] == "filtration") & (stored["status"] == "accepted")]
    assert len(ok) == 9
    clear = latest_verdicts(catalog, Stage.FILTRATION)
    assert clear.loc[ids, "verdict"].tolist() == ["clear"] * 3


# ---- 16: a later run reads only what it needs ---------------------------------------------

def test_a_recorded_answer_table_is_not_read_again(tmp_path):
    root = LocalStorage(tmp_path)
    root.write_bytes(f"{inbox_prefix(Stage.VALIDATION)}/a.csv", GOOD)
    crowd = FileCrowd(root)
    assert len(crowd.pull(Stage.VALIDATION)) == 2
    recorded = {file_answer_id(table_id(GOOD), 0), file_answer_id(table_id(GOOD), 1)}
    assert crowd.pull(Stage.VALIDATION, recorded=recorded).empty


def test_the_stage_state_is_read_without_other_stages_or_raw_answers(tmp_path):
    root = tmp_path / "root"
    ids = make_catalog(root, n=2, seed=25)
    catalog = Catalog(LocalStorage(root))
    rows = pd.concat([answer_rows(ids, stage) for stage in ("validation", "filtration")])
    catalog.write_batch("00001-a", {"answers": answer_table(
        rows, batch_id="00001-a", now=dt.datetime.now(dt.UTC))}, info={})
    tables = load_stage(catalog, Stage.VALIDATION)
    assert set(tables.answers["stage"]) == {"validation"} and len(tables.answers) == 2
    assert not {"raw", "detail", "batch_id"} & set(tables.answers.columns)
    only = catalog.read_table("answers", columns=["answer_id"],
                              filters=pc.field("stage") == "filtration")
    assert only.column_names == ["answer_id"] and only.num_rows == 2


def answer_rows(ids: list[str], stage: str) -> pd.DataFrame:
    """Two screened answers rows of ``stage``."""
    return pd.DataFrame({
        "answer_id": [f"{stage}:{i}" for i in ids], "stage": stage, "queue": "crowd",
        "image_id": ids, "worker_id": "w1", "answer": "yes",
        "answered_at": pd.NaT, "origin": "test", "status": "accepted", "reason": None,
        "detail": None, "raw": "{}"})


def test_the_fast_csv_reader_and_the_reference_reader_agree(tmp_path):
    text = ('\ufeffimage_id,worker_id,answer,reason,note\r\n'
            'img1, 007 ,no,wrong_gesture,"a, b"\r\n'
            'img2,W1,yes,,"line\none"\r\n'
            'img3,,,,\r\n')
    fast = answer_table_frame(text.encode(), name="a.csv", stage=Stage.VALIDATION, origin="x")
    ragged = (text + "img4,w4,yes\r\n").encode()  # a short row: the csv module reads it
    slow = answer_table_frame(ragged, name="a.csv", stage=Stage.VALIDATION, origin="x")
    same = ["stage", "queue", "image_id", "worker_id", "value", "answered_at"]
    pd.testing.assert_frame_equal(fast[same].iloc[:3], slow[same].iloc[:3], check_dtype=False)
    assert [json.loads(r) for r in fast["raw"]] == [json.loads(r) for r in slow["raw"][:3]]
    assert fast["worker_id"].tolist() == [" 007 ", "W1", ""]  # as given: screening trims
    assert fast["value"].iat[0] == {"valid": "no", "reason": "wrong_gesture"}
    assert slow["value"].iat[3] == "yes" and slow["image_id"].iat[3] == "img4"


# ---- 17: worker ids are opaque ------------------------------------------------------------

def _raw(i: int, worker: str) -> RawAnswer:
    return RawAnswer(answer_id=f"a{i}", stage="validation", queue="crowd", image_id="img1",
                     worker_id=worker, value="yes", answered_at=None, origin="test")


def test_worker_ids_keep_their_case_and_lose_surrounding_whitespace():
    rows = screen_answers([_raw(1, "W1"), _raw(2, "w1"), _raw(3, " w1\t"), _raw(4, "W1 ")],
                          stage=Stage.VALIDATION, pushed={("crowd", "img1")}, answered=set())
    got = [(r["worker_id"], r["status"], r["reason"]) for r in rows]
    assert got == [("W1", "accepted", None), ("w1", "accepted", None),
                   ("w1", "rejected", "duplicate_answer"), ("W1", "rejected", "duplicate_answer")]
    again = screen_answers([_raw(5, "\u00a0w1")], stage=Stage.VALIDATION,
                           pushed={("crowd", "img1")}, answered={("crowd", "img1", "w1")})
    assert again[0]["reason"] == "duplicate_answer"


# ---- 18: outside text is escaped in Markdown ----------------------------------------------

def _render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def _assert_inert(rendered: str, texts: list[str]) -> None:
    for tag in ("<a ", "<img", "<em>", "<strong>", "<code>", "<script"):
        assert tag not in rendered
    for text in texts:
        assert html.escape(text, quote=False) in rendered


def test_markdown_text_is_one_literal_line():
    for text in (HOSTILE, "x\n# heading\r\n- item `code` ~~s~~ \\| \x00 &amp;"):
        row = f"| {markdown_text(text)} | 1 |"
        assert "\n" not in row
        rendered = _render(f"| name | n |\n|---|---|\n{row}\n")
        assert len(re.findall("<td>", rendered)) == 2
        _assert_inert(rendered, [" ".join(text.replace("\x00", " ").split())]
                      if "\n" not in text else [])


def test_the_stage_report_escapes_worker_ids_and_file_names():
    report = {"stage": "validation", "backend": "file", "method": "mv",
              "verdicts": {"accepted": 1}, "queue": {"sent": 1}, "answers_pulled": 2,
              "answers_rejected": {"unreadable": 1}, "pushed": 0,
              "quarantined": [{"file": HOSTILE, "moved_to": f"crowd/q/{HOSTILE}",
                               "reason": "line 1: <b>bad</b>"}],
              "workers": [{"worker_id": HOSTILE, "n_answers": 1, "discounted": False},
                          {"worker_id": "w|2\nw3", "n_answers": 1, "discounted": True}]}
    rendered = _render(report_markdown(report))
    _assert_inert(rendered, [HOSTILE, "line 1: <b>bad</b>", "w|2 w3"])
    for row in re.findall(r"<tr>.*?</tr>", rendered, flags=re.DOTALL):
        assert len(re.findall("<t[dh]>", row)) in (2, 3)


def test_the_ingest_summary_escapes_file_names():
    summary = {"inputs": 2, "skipped_already_seen": 0, "accepted": 1, "rejected": 1,
               "elapsed_s": 1.0, "inputs_per_s": 2.0, "reasons": {"near_duplicate": 1},
               "sample_duplicates": [{"file": HOSTILE, "reason": "near_duplicate",
                                      "duplicate_of": "abc", "kept_file": f"kept/{HOSTILE}",
                                      "distance": 2, "similarity": 0.9}]}
    rendered = _render(summary_markdown(summary)).split("<table>", 1)[1]  # counts in bold
    _assert_inert(rendered, [HOSTILE, f"kept/{HOSTILE}"])
    [row] = [r for r in re.findall(r"<tr>.*?</tr>", rendered, flags=re.DOTALL) if "abc" in r]
    assert len(re.findall("<td", row)) == 6
