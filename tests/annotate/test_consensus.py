"""Box consensus on hand-checked answers, annotator quality, and properties (hypothesis)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.annotation import BOXES, AnnotationSettings
from schemas.taxonomy import load_taxonomy
from tasks.annotate.boxes import Box, ParsedAnnotation, from_labelstudio, iou
from tasks.annotate.consensus import (
    METHOD,
    aggregate_image,
    annotator_quality,
    box_rows,
    match_boxes,
    skills_from_quality,
)
from tasks.simulation.annotators import SimAnnotator, annotator_rng, simulated_answer

LABELS = load_taxonomy().box_labels


def edge_box(x1: float, y1: float, x2: float, y2: float, label: str) -> Box:
    return Box.from_edges(x1, y1, x2, y2, label)


def answer(*boxes: Box, hand: str = "right") -> ParsedAnnotation:
    return ParsedAnnotation(tuple(boxes), hand)


def rounded(box: Box) -> tuple[float, ...]:
    return tuple(round(v, 9) for v in box.edges())


# Two hands, three annotators: b swaps the gesture label, c misses the free hand and picks
# the wrong leading hand.
A = answer(edge_box(0.10, 0.20, 0.30, 0.50, "like"), edge_box(0.60, 0.50, 0.70, 0.70, "no_gesture"))
B = answer(edge_box(0.62, 0.52, 0.72, 0.68, "no_gesture"), edge_box(0.12, 0.18, 0.32, 0.52, "peace"))
C = answer(edge_box(0.08, 0.22, 0.28, 0.50, "like"), hand="left")
SMALL = {"a": A, "b": B, "c": C}


def test_hand_checked_medians_votes_and_agreement():
    got = aggregate_image(SMALL)
    assert (got.leading_hand, got.leading_conf, got.n_annotators) == ("right", 2 / 3, 3)
    gesture, free = got.boxes
    # gesture hand: median of each edge over a, b, c
    assert rounded(gesture.box) == (0.10, 0.20, 0.30, 0.50)
    assert (gesture.box.label, gesture.label_conf, gesture.n_votes) == ("like", 2 / 3, 3)
    # free hand: drawn by a and b (2 of 3, a majority): the median of two is their mean
    assert rounded(free.box) == (0.61, 0.51, 0.71, 0.69)
    assert (free.box.label, free.label_conf, free.n_votes) == ("no_gesture", 1.0, 2)
    # IoUs with the aggregate, by hand: b 0.054/0.074, c 0.0504/0.0656; a 0.0162/0.0218,
    # b 0.0144/0.0196
    assert gesture.agreement == pytest.approx((1 + 0.054 / 0.074 + 0.0504 / 0.0656) / 3)
    assert free.agreement == pytest.approx((0.0162 / 0.0218 + 0.0144 / 0.0196) / 2)
    assert got.agreement == pytest.approx((gesture.agreement + free.agreement) / 2)
    assert got.minority_hands == 0
    assert [w for w, _ in free.votes] == ["a", "b"]
    # a 2-1 leading hand is asked again by default (min_leading_conf 0.75), not below it
    assert got.low_agreement
    relaxed = aggregate_image(SMALL, settings=AnnotationSettings(min_leading_conf=0.6))
    assert not relaxed.low_agreement


def test_a_hand_short_of_a_majority_is_dropped():
    got = aggregate_image({"a": A, "c": C})  # the free hand: 1 of 2 is no strict majority
    assert [b.box.label for b in got.boxes] == ["like"]
    assert got.minority_hands == 1
    assert (got.leading_hand, got.leading_conf) == ("left", 0.5)  # a tie: by name
    assert got.low_agreement  # no majority on the leading hand


def test_no_hand_with_a_majority_is_low_agreement_with_agreement_zero():
    far = answer(edge_box(0.7, 0.1, 0.9, 0.3, "like"))
    got = aggregate_image({"a": answer(A.boxes[0]), "b": far})
    assert got.boxes == () and got.agreement == 0.0 and got.low_agreement
    assert got.minority_hands == 2


def test_low_mean_iou_is_low_agreement():
    loose = {"a": answer(edge_box(0.1, 0.1, 0.3, 0.3, "like")),
             "b": answer(edge_box(0.12, 0.12, 0.32, 0.32, "like"))}
    got = aggregate_image(loose)
    assert 0.5 < got.agreement < 0.9
    assert aggregate_image(loose, settings=AnnotationSettings(min_agreement=0.95)).low_agreement
    assert not aggregate_image(loose, settings=AnnotationSettings(min_agreement=0.5)).low_agreement


def test_skills_weigh_label_and_leading_hand_votes():
    boxes = {"a": "like", "b": "peace", "c": "peace"}
    answers = {w: answer(edge_box(0.1, 0.1, 0.3, 0.3, label), hand="left" if w == "a" else "right")
               for w, label in boxes.items()}
    plain = aggregate_image(answers)
    assert (plain.boxes[0].box.label, plain.leading_hand) == ("peace", "right")
    weighted = aggregate_image(answers, skills={"a": 0.9, "b": 0.3, "c": 0.3})
    assert (weighted.boxes[0].box.label, weighted.boxes[0].label_conf) == ("like", 1 / 3)
    assert (weighted.leading_hand, weighted.leading_conf) == ("left", 1 / 3)
    assert weighted.low_agreement  # the weighted winner has no head majority
    # an unknown worker weighs the median skill
    assert aggregate_image(answers, skills={"a": 0.9, "b": 0.3}).boxes[0].box.label == "like"


def test_matching_is_an_optimal_assignment_not_first_come():
    # b1 overlaps a1 best (IoU 0.67) and a2 enough (0.54); b2 overlaps only a1 (0.55).
    # First come (b1 -> a1) leaves b2 alone; the optimal assignment pairs all four.
    def strip(x1: float, x2: float) -> Box:
        return edge_box(x1, 0.4, x2, 0.5, "like")

    a = [strip(0.0, 0.4), strip(0.2, 0.6)]
    b = [strip(0.08, 0.48), strip(0.0, 0.22)]
    assert iou(b[0], a[0]) > iou(b[0], a[1]) > 0.5 and iou(b[1], a[1]) < 0.5 < iou(b[1], a[0])
    clusters = match_boxes([a, b], min_iou=0.5)
    assert sorted(sorted(c.items()) for c in clusters) == [[(0, 0), (1, 1)], [(0, 1), (1, 0)]]


def test_annotator_quality_against_the_aggregate():
    agg = aggregate_image(SMALL)
    q = annotator_quality({"img": SMALL}, {"img": agg})
    assert q.index.tolist() == ["a", "b", "c"]
    assert q["n_matched"].tolist() == [2, 2, 1]
    assert q["missed_rate"].tolist() == [0.0, 0.0, 0.5]
    assert q["label_accuracy"].tolist() == [1.0, 0.5, 1.0]
    assert q["leading_accuracy"].tolist() == [1.0, 1.0, 0.0]
    assert q["extra_rate"].tolist() == [0.0, 0.0, 0.0]
    assert q.at["b", "mean_iou"] == pytest.approx(
        (iou(B.boxes[1], agg.boxes[0].box) + iou(B.boxes[0], agg.boxes[1].box)) / 2)
    assert skills_from_quality(q, min_images=1) == {"a": 1.0, "b": 0.75, "c": 0.5}
    assert annotator_quality({}, {}).empty


def test_box_rows_fit_the_boxes_table():
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = box_rows("img", aggregate_image(SMALL), method=METHOD, batch_id="b1", decided_at=now)
    table = pa.Table.from_pylist(rows, schema=BOXES)
    assert table.column("box_index").to_pylist() == [0, 1]
    assert table.column("leading_hand").to_pylist() == ["right", "right"]
    assert table.column("n_votes").to_pylist() == [3, 2]


def test_an_unknown_leading_hand_is_stored_as_nulls_and_never_aggregated():
    from dataclasses import replace

    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    unknown = replace(aggregate_image(SMALL), leading_hand=None, leading_conf=None)
    table = pa.Table.from_pylist(box_rows("img", unknown, method="import:hagrid",
                                          batch_id="b1", decided_at=now), schema=BOXES)
    assert table.column("leading_hand").to_pylist() == [None, None]
    assert table.column("leading_conf").to_pylist() == [None, None]
    with pytest.raises(ValueError, match="leading hand"):
        aggregate_image({"a": answer(edge_box(0.1, 0.1, 0.3, 0.3, "like")),
                         "b": ParsedAnnotation((edge_box(0.1, 0.1, 0.3, 0.3, "like"),), None)})


# ---- properties -------------------------------------------------------------------------

@st.composite
def crowd(draw: st.DrawFn) -> dict[str, ParsedAnnotation]:
    """1-5 annotators over 1-3 hands: each draws each hand or not, with jittered edges."""
    hands = draw(st.lists(st.tuples(st.floats(0, 0.7), st.floats(0, 0.7), st.floats(0.05, 0.3),
                                    st.floats(0.05, 0.3)), min_size=1, max_size=3))
    jitter = st.floats(-0.02, 0.02)  # every box keeps a size of at least 0.01
    out = {}
    for k in range(draw(st.integers(1, 5))):
        boxes: list[Box] = []
        for x, y, w, h in hands:
            if draw(st.booleans()) or not boxes:
                d = [draw(jitter) for _ in range(4)]
                x1, y1 = max(x + d[0], 0.0), max(y + d[1], 0.0)
                x2, y2 = min(x + w + d[2], 1.0), min(y + h + d[3], 1.0)
                boxes.append(edge_box(x1, y1, x2, y2, draw(st.sampled_from(LABELS[:3]))))
        out[f"w{k}"] = answer(*boxes, hand=draw(st.sampled_from(["left", "right"])))
    return out


@settings(max_examples=80, deadline=None)
@given(answers=crowd(), data=st.data())
def test_aggregation_does_not_depend_on_the_order_of_annotators_or_boxes(answers, data):
    order = data.draw(st.permutations(sorted(answers)))
    shuffled = {w: answer(*data.draw(st.permutations(answers[w].boxes)),
                          hand=answers[w].leading_hand) for w in order}
    assert aggregate_image(shuffled) == aggregate_image(answers)
    skills = {w: 0.5 + 0.1 * i for i, w in enumerate(sorted(answers))}
    assert aggregate_image(shuffled, skills=skills) == aggregate_image(answers, skills=skills)


@settings(max_examples=80, deadline=None)
@given(answers=crowd(), data=st.data())
def test_matching_does_not_depend_on_the_order_of_annotators(answers, data):
    lists = [list(a.boxes) for a in answers.values()]
    order = data.draw(st.permutations(range(len(lists))))

    def content(given: list[list[Box]], clusters: list[dict[int, int]]) -> list[list]:
        return [sorted((b.x, b.y, b.w, b.h, b.label)
                       for b in (given[a][i] for a, i in c.items())) for c in clusters]

    permuted = [lists[i] for i in order]
    assert content(permuted, match_boxes(permuted, min_iou=0.5)) == \
        content(lists, match_boxes(lists, min_iou=0.5))
    clusters = match_boxes(lists, min_iou=0.5)
    assert sorted((a, i) for c in clusters for a, i in c.items()) == \
        sorted((a, i) for a, boxes in enumerate(lists) for i in range(len(boxes)))


@settings(max_examples=80, deadline=None)
@given(answers=crowd())
def test_aggregated_boxes_are_inside_the_image_with_a_positive_size(answers):
    got = aggregate_image(answers)
    for b in got.boxes:
        assert 0.0 <= b.box.x and 0.0 <= b.box.y and b.box.w > 0 and b.box.h > 0
        assert b.box.x + b.box.w <= 1 + 1e-12 and b.box.y + b.box.h <= 1 + 1e-12
        assert 2 * b.n_votes > got.n_annotators
        assert 0.0 <= b.agreement <= 1.0 + 1e-12
    assert 0.0 <= got.agreement <= 1.0 + 1e-12


@settings(max_examples=50, deadline=None)
@given(answers=crowd(), n=st.integers(1, 5))
def test_identical_annotators_give_their_own_boxes_and_full_agreement(answers, n):
    one = next(iter(answers.values()))
    got = aggregate_image({f"w{k}": one for k in range(n)})
    assert got.agreement == pytest.approx(1.0)
    assert not got.low_agreement and got.leading_conf == 1.0
    assert sorted(rounded(b.box) + (b.box.label,) for b in got.boxes) == \
        sorted(rounded(b) + (b.label,) for b in one.boxes)


# ---- simulated annotators ---------------------------------------------------------------

TRUTH = (Box(0.1, 0.2, 0.2, 0.3, "like"), Box(0.6, 0.5, 0.15, 0.2, "no_gesture"))


def simulate(annotator: SimAnnotator, image_id: str = "img", seed: int = 0) -> ParsedAnnotation:
    result = simulated_answer(annotator, TRUTH, "right", labels=LABELS, width=1920,
                              height=1080, rng=annotator_rng(seed, annotator.annotator_id,
                                                             image_id))
    return from_labelstudio(result, labels=set(LABELS))


def test_a_flawless_simulated_annotator_draws_the_truth_through_label_studio():
    perfect = SimAnnotator("p", jitter=0.0, miss_rate=0.0, label_swap_rate=0.0,
                           wrong_hand_rate=0.0)
    got = simulate(perfect)
    assert [rounded(b) for b in got.boxes] == [rounded(b) for b in TRUTH]
    assert [b.label for b in got.boxes] == ["like", "no_gesture"] and got.leading_hand == "right"


def test_simulated_answers_are_deterministic_per_seed_annotator_and_image():
    worker = SimAnnotator("w1")
    assert simulate(worker) == simulate(worker)
    assert simulate(worker) != simulate(worker, image_id="other")
    assert simulate(worker) != simulate(worker, seed=1)


def test_simulated_error_rates_show_up():
    sloppy = SimAnnotator("s", jitter=0.0, miss_rate=0.5, label_swap_rate=0.0,
                          wrong_hand_rate=1.0)
    answers = [simulated_answer(sloppy, TRUTH, "right", labels=LABELS, width=100, height=100,
                                rng=np.random.default_rng(i)) for i in range(200)]
    drawn = [sum(r["type"] == "rectanglelabels" for r in a) for a in answers]
    assert 0.4 < np.mean(drawn) / len(TRUTH) < 0.6
    assert all(r["value"]["choices"] == ["left"] for a in answers for r in a
               if r["type"] == "choices")


def test_three_simulated_annotators_recover_the_truth():
    workers = [SimAnnotator(f"w{k}", jitter=0.03, miss_rate=0.0) for k in range(3)]
    got = aggregate_image({w.annotator_id: simulate(w) for w in workers})
    assert [b.box.label for b in got.boxes] == ["like", "no_gesture"]
    assert all(iou(b.box, t) > 0.8 for b, t in zip(got.boxes, TRUTH, strict=True))
