"""Raw answers -> canonical answers or recorded rejections; answer tables."""

from __future__ import annotations

import pytest

from schemas.crowd import AnswerReason, Stage
from tasks.crowd.answers import AnswerError, RawAnswer, canonical_answer, screen_answers
from tasks.crowd.backends import read_answer_table


@pytest.mark.parametrize("value, expected", [
    ("yes", "yes"), ("YES ", "yes"), ("no:hand_cut_off", "no:hand_cut_off"),
    ({"valid": ["no"], "reason": ["wrong_gesture"]}, "no:wrong_gesture"),
    ({"valid": ["yes"], "reason": None}, "yes"),
])
def test_validation_answers_are_canonical(value, expected):
    assert canonical_answer(Stage.VALIDATION, value) == expected


@pytest.mark.parametrize("value, expected", [
    ("none", "none"), (["text", "child"], "child,text"), ("text;child", "child,text"),
    ({"flags": ["personal_data"]}, "personal_data"),
])
def test_filtration_answers_are_canonical(value, expected):
    assert canonical_answer(Stage.FILTRATION, value) == expected


@pytest.mark.parametrize("stage, value, reason", [
    (Stage.VALIDATION, "maybe", AnswerReason.UNKNOWN_CHOICE),
    (Stage.VALIDATION, "no", AnswerReason.MISSING_FIELD),
    (Stage.VALIDATION, "no:blurry", AnswerReason.UNKNOWN_CHOICE),
    (Stage.VALIDATION, {"valid": ["yes", "no"]}, AnswerReason.CONTRADICTORY),
    (Stage.VALIDATION, None, AnswerReason.MISSING_FIELD),
    (Stage.VALIDATION, 3, AnswerReason.UNKNOWN_CHOICE),
    (Stage.FILTRATION, ["none", "child"], AnswerReason.CONTRADICTORY),
    (Stage.FILTRATION, ["weapon"], AnswerReason.UNKNOWN_CHOICE),
    (Stage.FILTRATION, [], AnswerReason.MISSING_FIELD),
    (Stage.FILTRATION, "", AnswerReason.MISSING_FIELD),
])
def test_malformed_answers_raise_with_a_reason(stage, value, reason):
    with pytest.raises(AnswerError) as info:
        canonical_answer(stage, value)
    assert info.value.reason is reason


def _raw(i: int, image: str | None = "img1", worker: str | None = "w1", value="yes", **kw):
    base = {"answer_id": f"a{i}", "stage": "validation", "queue": "crowd", "image_id": image,
                "worker_id": worker, "value": value, "answered_at": None, "origin": "test"}
    return RawAnswer(**{**base, **kw})


def test_screening_records_every_answer_once_with_its_reason():
    raws = [
        _raw(1), _raw(2, value="no:other"),  # second answer from w1 for img1: a duplicate
        _raw(3, worker="w2", value="bogus"), _raw(4, image="img9"), _raw(5, image=None),
        _raw(6, worker="w3", skipped=True), _raw(7, worker="w4", stage="filtration"),
        _raw(8, worker="w5", unreadable="broken table"), _raw(9, worker="w6", queue="later"),
        _raw(10, worker="w2", value="no:wrong_gesture"),
    ]
    rows = screen_answers(raws, stage=Stage.VALIDATION, pushed={("crowd", "img1")},
                          answered=set())
    assert [r["answer_id"] for r in rows] == [f"a{i}" for i in range(1, 11)]
    got = {r["answer_id"]: (r["status"], r["reason"], r["answer"]) for r in rows}
    assert got["a1"] == ("accepted", None, "yes")
    assert got["a2"][:2] == ("rejected", "duplicate_answer")
    assert got["a3"][:2] == ("rejected", "unknown_choice")
    assert got["a4"][:2] == ("rejected", "unknown_image")
    assert got["a5"][:2] == ("rejected", "missing_field")
    assert got["a6"][:2] == ("rejected", "skipped")
    assert got["a7"][:2] == ("rejected", "wrong_stage")
    assert got["a8"][:2] == ("rejected", "unreadable")
    assert got["a9"][:2] == ("rejected", "unknown_choice")
    # a worker whose first answer was malformed may still answer properly
    assert got["a10"] == ("accepted", None, "no:wrong_gesture")
    assert all(r["raw"] for r in rows)


def test_an_answer_from_an_earlier_run_makes_a_new_one_a_duplicate():
    rows = screen_answers([_raw(1)], stage=Stage.VALIDATION, pushed={("crowd", "img1")},
                          answered={("crowd", "img1", "w1")})
    assert rows[0]["reason"] == "duplicate_answer"


def test_answer_tables_csv_jsonl_and_broken():
    csv_data = b"image_id,worker_id,answer,reason,time\nimg1,w1,no,hand_cut_off,2026-01-02T03:04:05\n"
    [raw] = read_answer_table(csv_data, name="a.csv", stage=Stage.VALIDATION, origin="file:a")
    assert raw.value == {"valid": "no", "reason": "hand_cut_off"}
    assert raw.answered_at is not None and raw.answered_at.tzinfo is not None
    jsonl = b'{"image_id": "img1", "worker_id": "w1", "answer": ["text"]}\n[1, 2]\n'
    raws = read_answer_table(jsonl, name="a.jsonl", stage=Stage.FILTRATION, origin="file:b")
    assert [r.value for r in raws] == [["text"], None]
    again = read_answer_table(jsonl, name="other.jsonl", stage=Stage.FILTRATION, origin="x")
    assert [r.answer_id for r in again] == [r.answer_id for r in raws]  # ids follow content
    for broken in (b"\xff\xfe\x00garbage", b"image_id,worker_id\nimg1,w1\n", b"{not json}\n"):
        name = "b.jsonl" if broken.startswith(b"{") else "b.csv"
        [bad] = read_answer_table(broken, name=name, stage=Stage.VALIDATION, origin="file:c")
        assert bad.unreadable and "unreadable answer table" in bad.unreadable
