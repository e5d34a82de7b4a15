"""Label Studio results -> checked boxes: percent and rotation, clipping, rejections, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.annotation import AnnotationSettings, BoxReason
from schemas.taxonomy import load_taxonomy
from tasks.annotate.boxes import (
    AnnotationError,
    Box,
    ParsedAnnotation,
    answer_json,
    from_hagrid,
    from_labelstudio,
    iou,
    parse_answer_json,
    to_labelstudio,
    upright_annotation,
    upright_box,
    upright_point,
)

LABELS = frozenset(load_taxonomy().box_labels)


def rect(x: float, y: float, w: float, h: float, label: object = "like", *,
         rotation: float = 0.0, size: tuple[int, int] | None = (1000, 500),
         **extra: object) -> dict:
    item: dict = {"from_name": "hands", "to_name": "image", "type": "rectanglelabels",
                  "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                            "rectanglelabels": label if isinstance(label, list) else [label]},
                  **extra}
    if size is not None:
        item.update(original_width=size[0], original_height=size[1])
    return item


def hand(choice: object = "right") -> dict:
    return {"from_name": "leading_hand", "to_name": "image", "type": "choices",
            "value": {"choices": choice if isinstance(choice, list) else [choice]}}


def parse(*items: dict, **kw: object) -> ParsedAnnotation:
    return from_labelstudio(list(items), labels=LABELS, **kw)  # type: ignore[arg-type]


def edges(box: Box) -> tuple[float, ...]:
    return tuple(round(v, 9) for v in box.edges())


def reason_of(*items: dict, **kw: object) -> BoxReason:
    with pytest.raises(AnnotationError) as exc:
        parse(*items, **kw)
    return exc.value.reason


# ---- coordinates ------------------------------------------------------------------------

def test_percent_becomes_normalized_hagrid_xywh():
    got = parse(rect(10, 20, 30, 40, "peace", size=None), hand("left"))
    assert got.boxes == (Box(0.1, 0.2, 0.3, 0.4, "peace"),)
    assert (got.leading_hand, got.problems, got.clipped) == ("left", (), 0)


def test_rotation_90_is_clockwise_about_the_top_left_corner_in_pixels():
    # 1000 x 500 image; x=20% y=20% w=30% h=20% -> (200, 100), 300 x 100 px. Turned 90 deg
    # clockwise about (200, 100) (y down): corners (200,100) (200,400) (100,400) (100,100),
    # so x in [100, 200] px, y in [100, 400] px -> 0.1, 0.2, w 0.1, h 0.6.
    got = parse(rect(20, 20, 30, 20, rotation=90), hand()).boxes[0]
    assert edges(got) == (0.1, 0.2, 0.2, 0.8)


def test_rotation_270_and_180_by_hand():
    # (500, 250) px, 200 x 50 px, turned 270 cw (90 ccw): x in [500, 550], y in [50, 250]
    got = parse(rect(50, 50, 20, 10, rotation=270), hand()).boxes[0]
    assert edges(got) == (0.5, 0.1, 0.55, 0.5)
    # turned 180 about its top-left corner: it now lies up and left of (x, y)
    got = parse(rect(50, 50, 20, 10, rotation=180), hand()).boxes[0]
    assert edges(got) == (0.3, 0.4, 0.5, 0.5)


def test_rotation_45_takes_the_axis_aligned_hull_in_pixels():
    # a 100 x 100 px square at (500, 250) of a 1000 x 500 image, turned 45 deg clockwise
    got = parse(rect(50, 50, 10, 20, rotation=45), hand()).boxes[0]
    d = 100 * math.sqrt(0.5)
    want = ((500 - d) / 1000, 250 / 500, (500 + d) / 1000, (250 + 2 * d) / 500)
    assert got.edges() == pytest.approx(want)
    # -315 degrees is the same turn
    assert parse(rect(50, 50, 10, 20, rotation=-315), hand()).boxes[0].edges() == \
        pytest.approx(want)


def test_the_catalog_size_drives_the_rotation_and_catches_unoriented_images():
    item = rect(20, 20, 30, 20, rotation=90, size=None)
    assert edges(parse(item, hand(), image_size=(1000, 500)).boxes[0]) == (0.1, 0.2, 0.2, 0.8)
    assert reason_of(item, hand()) is BoxReason.MALFORMED  # rotated, and no size anywhere
    # LS showed a 500 x 1000 picture of a 1000 x 500 oriented image: EXIF not applied
    swapped = rect(10, 10, 10, 10, size=(500, 1000))
    assert reason_of(swapped, hand(), image_size=(1000, 500)) is BoxReason.SIZE_MISMATCH
    # a proportional preview is fine: percent coordinates do not change
    assert parse(rect(10, 10, 10, 10, size=(500, 250)), hand(), image_size=(1000, 500)).boxes


def test_an_image_rotated_in_the_ui_is_rejected():
    assert reason_of(rect(10, 10, 10, 10, image_rotation=90), hand()) is BoxReason.IMAGE_ROTATED
    assert parse(rect(10, 10, 10, 10, image_rotation=360), hand()).boxes


# ---- box checks -------------------------------------------------------------------------

def test_slightly_outside_is_clipped_far_outside_is_dropped_with_a_reason():
    got = parse(rect(-3, 10, 20, 20), rect(90, 97, 14, 6, "no_gesture"),
                rect(-10, 10, 20, 20, "palm"), rect(50, 50, 60, 10), hand())
    assert [edges(b) for b in got.boxes] == [(0.0, 0.1, 0.17, 0.3), (0.9, 0.97, 1.0, 1.0)]
    assert got.clipped == 2
    assert [(p.index, p.reason) for p in got.problems] == [
        (2, BoxReason.FAR_OUTSIDE), (3, BoxReason.FAR_OUTSIDE)]


def test_degenerate_boxes_are_dropped():
    tight = AnnotationSettings(min_box_size=0.01)
    got = parse(rect(10, 10, 0, 10), rect(10, 10, 10, -5), rect(10, 10, 0.5, 10),
                rect(102, 10, 3, 10), rect(10, 10, 10, 10), hand(), settings=tight)
    assert len(got.boxes) == 1
    assert [p.reason for p in got.problems] == [BoxReason.DEGENERATE_BOX] * 4


def test_label_problems_drop_the_box_only():
    got = parse(rect(10, 10, 10, 10, "thumbs_up"), rect(30, 10, 10, 10, []),
                rect(50, 10, 10, 10, ["like", "palm"]), rect(70, 10, 10, 10, " Like "), hand())
    assert [b.label for b in got.boxes] == ["like"]
    assert [p.reason for p in got.problems] == [
        BoxReason.UNKNOWN_LABEL, BoxReason.MISSING_LABEL, BoxReason.MISSING_LABEL]


def test_no_usable_box_rejects_the_answer():
    assert reason_of(hand()) is BoxReason.NO_BOXES
    assert reason_of(rect(10, 10, 10, 10, "thumbs_up"), hand()) is BoxReason.NO_BOXES


@pytest.mark.parametrize(("choice", "reason"), [
    (None, BoxReason.MISSING_LEADING_HAND), ([], BoxReason.MISSING_LEADING_HAND),
    ("both", BoxReason.UNKNOWN_LEADING_HAND), (["left", "right"], BoxReason.UNKNOWN_LEADING_HAND),
    ([3], BoxReason.MALFORMED),
])
def test_leading_hand_problems_reject_the_answer(choice, reason):
    items = [rect(10, 10, 10, 10)] + ([] if choice is None else [hand(choice)])
    assert reason_of(*items) is reason


@pytest.mark.parametrize("bad", [
    "not a list", [1, 2], [rect(10, 10, 10, 10) | {"value": {"x": "10"}}],
    [rect(float("nan"), 10, 10, 10)], [{"from_name": "hands", "value": None}],
    [rect(10, 10, True, 10)],
])
def test_malformed_results_are_rejected(bad):
    with pytest.raises(AnnotationError) as exc:
        from_labelstudio(bad + [hand()] if isinstance(bad, list) else bad, labels=LABELS)
    assert exc.value.reason is BoxReason.MALFORMED


def test_other_controls_are_ignored():
    extra = {"from_name": "comment", "type": "textarea", "value": {"text": ["blurry"]}}
    assert parse(rect(10, 10, 10, 10), extra, hand()).boxes


# ---- round trips ------------------------------------------------------------------------

boxes_st = st.lists(
    st.builds(lambda x, y, w, h, label: Box(x, y, min(w, 1 - x), min(h, 1 - y), label),
              st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.01, 1), st.floats(0.01, 1),
              st.sampled_from(sorted(LABELS))),
    min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(boxes=boxes_st, leading=st.sampled_from(["left", "right"]),
       size=st.sampled_from([(1920, 1080), (1080, 1920), (640, 480)]))
def test_to_labelstudio_round_trip(boxes, leading, size):
    result = to_labelstudio(boxes, leading, width=size[0], height=size[1])
    got = from_labelstudio(result, labels=LABELS, image_size=size)
    assert got.leading_hand == leading and got.problems == ()
    assert [b.label for b in got.boxes] == [b.label for b in boxes]
    for a, b in zip(got.boxes, boxes, strict=True):
        assert a.edges() == pytest.approx(b.edges(), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(boxes=boxes_st, leading=st.sampled_from(["left", "right"]), data=st.data())
def test_answer_json_round_trip_is_canonical(boxes, leading, data):
    text = answer_json(ParsedAnnotation(tuple(boxes), leading))
    shuffled = data.draw(st.permutations(boxes))
    assert answer_json(ParsedAnnotation(tuple(shuffled), leading)) == text
    back = parse_answer_json(text)
    assert answer_json(back) == text
    in_order = sorted(boxes, key=lambda b: (*(round(v, 6) for v in (b.x, b.y, b.w, b.h)), b.label))
    for a, b in zip(back.boxes, in_order, strict=True):
        assert a.edges() == pytest.approx(b.edges(), abs=2e-6)
        assert a.x + a.w <= 1 + 1e-9 and a.y + a.h <= 1 + 1e-9


def test_answer_json_is_a_hagrid_entry():
    got = answer_json(ParsedAnnotation((Box(0.5, 0.25, 0.125, 0.25, "like"),), "right"))
    assert got == '{"bboxes":[[0.5,0.25,0.125,0.25]],"labels":["like"],"leading_hand":"right"}'


@pytest.mark.parametrize("bad", [
    "", "[]", '{"bboxes": [], "labels": []}',
    '{"bboxes": [[0.1, 0.1, 0.1]], "labels": ["like"], "leading_hand": "left"}',
    '{"bboxes": [[0.1, 0.1, 0.1, 0.1]], "labels": [], "leading_hand": "left"}',
    '{"bboxes": [[0.9, 0.1, 0.5, 0.1]], "labels": ["like"], "leading_hand": "left"}',
    '{"bboxes": [[0.1, 0.1, 0.1, 0.1]], "labels": ["like"], "leading_hand": "up"}',
])
def test_parse_answer_json_rejects_anything_else(bad):
    with pytest.raises(AnnotationError) as exc:
        parse_answer_json(bad)
    assert exc.value.reason is BoxReason.MALFORMED


def test_from_hagrid_applies_the_same_checks():
    entry = {"bboxes": [[0.1, 0.2, 0.3, 0.4], [0.98, 0.5, 0.05, 0.1], [0.5, 0.5, 0, 0.1]],
             "labels": ["call", "no_gesture", "call"], "leading_hand": "left",
             "leading_conf": 1.0, "user_id": "abc"}
    got = from_hagrid(entry, labels=LABELS)
    assert [edges(b) for b in got.boxes] == [(0.1, 0.2, 0.4, 0.6), (0.98, 0.5, 1.0, 0.6)]
    assert (got.clipped, [p.reason for p in got.problems]) == (1, [BoxReason.DEGENERATE_BOX])
    with pytest.raises(AnnotationError):
        from_hagrid({**entry, "leading_hand": None}, labels=LABELS)


def test_iou():
    a = Box(0.0, 0.0, 0.4, 0.4, "like")
    assert iou(a, a) == 1.0
    assert iou(a, Box(0.2, 0.0, 0.4, 0.4, "like")) == pytest.approx(0.08 / 0.24)
    assert iou(a, Box(0.5, 0.5, 0.1, 0.1, "like")) == 0.0


def test_settings_are_checked():
    with pytest.raises(ValueError):
        AnnotationSettings(overlap=5, max_answers=3)
    with pytest.raises(ValueError):
        AnnotationSettings(match_iou=0.0)


# ---- an unknown leading hand (HaGRID v2 entries) ----------------------------------------

def test_from_hagrid_may_leave_the_leading_hand_unknown():
    entry = {"bboxes": [[0.1, 0.2, 0.3, 0.4]], "labels": ["call"], "user_id": "abc",
             "united_bbox": None, "united_label": None, "meta": {"age": [30.0]}}
    with pytest.raises(AnnotationError) as exc:
        from_hagrid(entry, labels=LABELS)
    assert exc.value.reason is BoxReason.MISSING_LEADING_HAND
    got = from_hagrid(entry, labels=LABELS, require_leading_hand=False)
    assert got.leading_hand is None and [b.label for b in got.boxes] == ["call"]
    assert from_hagrid({**entry, "leading_hand": None}, labels=LABELS,
                       require_leading_hand=False).leading_hand is None
    with pytest.raises(AnnotationError) as exc:
        from_hagrid({**entry, "leading_hand": "up"}, labels=LABELS, require_leading_hand=False)
    assert exc.value.reason is BoxReason.UNKNOWN_LEADING_HAND


def test_an_unknown_leading_hand_round_trips_and_leaves_the_choice_open():
    boxes = (Box(0.5, 0.25, 0.125, 0.25, "like"),)
    text = answer_json(ParsedAnnotation(boxes, None))
    assert text == '{"bboxes":[[0.5,0.25,0.125,0.25]],"labels":["like"],"leading_hand":null}'
    back = parse_answer_json(text)
    assert back.leading_hand is None and back.boxes == boxes
    result = to_labelstudio(back.boxes, back.leading_hand, width=100, height=100)
    assert [r["from_name"] for r in result] == ["hands"]


# ---- EXIF orientation: stored pixels -> upright image -----------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_box_lands_where_pillow_turns_the_pixels(orientation):
    from PIL import Image, ImageOps

    stored = Image.new("L", (40, 20), 0)
    stored.paste(255, (4, 4, 12, 10))  # the box (0.1, 0.2, 0.2, 0.3) of the stored pixels
    stored.getexif()[0x0112] = orientation
    upright = ImageOps.exif_transpose(stored)
    lit = np.asarray(upright) > 0
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    want = (cols.min() / upright.width, rows.min() / upright.height,
            (cols.max() + 1) / upright.width, (rows.max() + 1) / upright.height)
    got = upright_box(Box(0.1, 0.2, 0.2, 0.3, "like"), orientation)
    assert got.edges() == pytest.approx(want) and got.label == "like"


def test_a_mirroring_orientation_swaps_the_leading_hand():
    answer = ParsedAnnotation((Box(0.1, 0.2, 0.2, 0.3, "like"),), "left")
    assert upright_annotation(answer, 1) is answer
    assert upright_annotation(answer, 6).leading_hand == "left"  # a turn keeps the hands
    for mirror in (2, 4, 5, 7):
        assert upright_annotation(answer, mirror).leading_hand == "right"
    unknown = ParsedAnnotation(answer.boxes, None)
    assert upright_annotation(unknown, 2).leading_hand is None
    with pytest.raises(ValueError):
        upright_point(0.5, 0.5, 9)
