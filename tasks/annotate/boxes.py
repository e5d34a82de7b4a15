"""Hand boxes: Label Studio results in and out, checks, and the canonical answer form. No I/O.

Label Studio (``RectangleLabels``) stores a rectangle as ``x, y, width, height`` in PERCENT
of the image it displayed, plus ``rotation``: degrees clockwise about the rectangle's
top-left corner ``(x, y)``, applied in pixel space (y pointing down). The corners are

    (x, y), (x + w cos r, y + w sin r), (x + w cos r - h sin r, y + w sin r + h cos r),
    (x - h sin r, y + h cos r)

in pixels (label-studio-sdk ``converter.utils.convert_annotation_to_yolo_obb``; the
frontend draws a Konva ``Rect`` at ``(x, y)`` with that ``rotation``). HaGRID boxes are
axis-aligned, so a rotated rectangle becomes its axis-aligned bounding box.

Granularity of the checks: a problem with one box (unknown or missing label, degenerate,
far outside) drops that box and is reported as a ``BoxProblem`` next to the accepted
boxes; a structurally malformed result, a missing or unknown leading hand, an image rotated
in the UI, or no usable box at all rejects the whole answer with ``AnnotationError``. The one
exception: a HaGRID entry may leave the leading hand unknown (``from_hagrid(...,
require_leading_hand=False)``: the v2 format has none), and its canonical form then says
``"leading_hand": null``.

Frames: our boxes are relative to the upright image (EXIF orientation applied), HaGRID's to
the stored pixels. ``upright_box`` / ``upright_point`` / ``upright_annotation`` turn the one
into the other for each EXIF orientation (1-8, as ``PIL.ImageOps.exif_transpose``); the
mirroring ones (2, 4, 5, 7) also swap the leading hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

from schemas.annotation import (
    BOX_CONTROL,
    COORD_DECIMALS,
    IMAGE_OBJECT,
    LEADING_HAND_CONTROL,
    LEADING_HANDS,
    AnnotationSettings,
    BoxReason,
)

Edges = tuple[float, float, float, float]  # x1, y1, x2, y2, normalized
XYWH = tuple[float, float, float, float]  # x, y, w, h, normalized (HaGRID)


@dataclass(frozen=True)
class Box:
    """One hand box, HaGRID convention: top-left ``x, y``, ``w, h``, relative to the image."""

    x: float
    y: float
    w: float
    h: float
    label: str

    @classmethod
    def from_edges(cls, x1: float, y1: float, x2: float, y2: float, label: str) -> Box:
        """The box spanning ``[x1, x2] x [y1, y2]``."""
        return cls(x1, y1, x2 - x1, y2 - y1, label)

    def edges(self) -> Edges:
        """``(x1, y1, x2, y2)``: left, top, right, bottom."""
        return self.x, self.y, self.x + self.w, self.y + self.h


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0.0 when either has no area)."""
    ax1, ay1, ax2, ay2 = a.edges()
    bx1, by1, bx2, by2 = b.edges()
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0.0 else 0.0


@dataclass(frozen=True)
class BoxProblem:
    """A box dropped from an otherwise usable answer; ``index``: its place among the boxes."""

    index: int
    reason: BoxReason
    detail: str


@dataclass(frozen=True)
class ParsedAnnotation:
    """One annotator's usable answer: checked boxes (clipped to the image), leading hand."""

    boxes: tuple[Box, ...]
    leading_hand: str | None  # None: unknown (only from a HaGRID entry that names none)
    problems: tuple[BoxProblem, ...] = ()
    clipped: int = 0  # boxes that were slightly outside the image and were clipped


class AnnotationError(ValueError):
    """An answer that cannot be used at all; ``reason`` is recorded with it."""

    def __init__(self, reason: BoxReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _BoxDropped(Exception):
    def __init__(self, reason: BoxReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---- Label Studio in --------------------------------------------------------------------

def from_labelstudio(result: Any, *, labels: AbstractSet[str],
                     settings: AnnotationSettings | None = None,
                     image_size: tuple[int, int] | None = None) -> ParsedAnnotation:
    """Check and convert a Label Studio annotation ``result`` list; ``AnnotationError``.

    ``labels``: the taxonomy's box labels. ``image_size``: the oriented ``(width, height)``
    from the catalog; when given, a result drawn on an image of another aspect ratio (EXIF
    orientation not applied) is rejected, and rotations use its aspect ratio.
    """
    settings = settings or AnnotationSettings()
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise AnnotationError(BoxReason.MALFORMED, "the result is not a list of objects")
    leading = _leading_hand(r for r in result if r.get("from_name") == LEADING_HAND_CONTROL)
    rects = (_rect(r, image_size=image_size) for r in result if r.get("from_name") == BOX_CONTROL)
    return _checked_answer(rects, leading, labels=labels, settings=settings)


def _checked_answer(candidates: Iterable[tuple[XYWH, Any]], leading_hand: str | None, *,
                    labels: AbstractSet[str], settings: AnnotationSettings) -> ParsedAnnotation:
    """Every candidate ``(x, y, w, h), label`` checked: kept (maybe clipped) or a problem."""
    boxes, problems, clipped = [], [], 0
    for index, (xywh, label) in enumerate(candidates):
        try:
            box, was_clipped = _checked_box(xywh, label, labels=labels, settings=settings)
        except _BoxDropped as drop:
            problems.append(BoxProblem(index, drop.reason, drop.detail))
            continue
        boxes.append(box)
        clipped += was_clipped
    if not boxes:
        detail = "; ".join(f"box {p.index}: {p.reason}" for p in problems) or "no box drawn"
        raise AnnotationError(BoxReason.NO_BOXES, f"no usable box ({detail})")
    return ParsedAnnotation(tuple(boxes), leading_hand, tuple(problems), clipped)


def _leading_hand(items: Iterable[dict[str, Any]]) -> str:
    chosen: set[str] = set()
    for item in items:
        value = item.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise AnnotationError(BoxReason.MALFORMED, f"leading hand choices: {value!r}")
        chosen |= {c.strip().lower() for c in choices if c.strip()}
    if not chosen:
        raise AnnotationError(BoxReason.MISSING_LEADING_HAND, "no leading hand chosen")
    if len(chosen) > 1 or not chosen <= set(LEADING_HANDS):
        raise AnnotationError(BoxReason.UNKNOWN_LEADING_HAND,
                              f"leading hand must be one of {LEADING_HANDS}, got {sorted(chosen)}")
    return chosen.pop()


def _rect(item: dict[str, Any], *, image_size: tuple[int, int] | None) -> tuple[XYWH, Any]:
    """The axis-aligned normalized ``x, y, w, h`` of a rectangle result, its raw labels."""
    value = item.get("value")
    if not isinstance(value, dict):
        raise AnnotationError(BoxReason.MALFORMED, f"rectangle without a value: {item!r}")
    x, y, w, h = (_number(value, key) for key in ("x", "y", "width", "height"))
    rotation = _number(value, "rotation", default=0.0) % 360.0
    if _number(item, "image_rotation", default=0.0) % 360.0 != 0.0:
        raise AnnotationError(BoxReason.IMAGE_ROTATED, "drawn on an image rotated in the UI")
    size = _pixel_size(item, image_size=image_size)
    labels = value.get("rectanglelabels")
    if w <= 0.0 or h <= 0.0 or rotation == 0.0:  # no rotation, or degenerate: checked later
        return (x / 100, y / 100, w / 100, h / 100), labels
    if size is None:
        raise AnnotationError(BoxReason.MALFORMED, "a rotated box without the image size")
    x1, y1, x2, y2 = rotated_box_edges(x, y, w, h, rotation, width=size[0], height=size[1])
    return (x1, y1, x2 - x1, y2 - y1), labels


def rotated_box_edges(x: float, y: float, w: float, h: float, rotation: float, *,
                      width: float, height: float) -> Edges:
    """Normalized axis-aligned bounds of a Label Studio rectangle (percent, degrees cw)."""
    cos, sin = _cos_sin(rotation)
    px, py, pw, ph = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    xs = (0.0, pw * cos, pw * cos - ph * sin, -ph * sin)
    ys = (0.0, pw * sin, pw * sin + ph * cos, ph * cos)
    return ((px + min(xs)) / width, (py + min(ys)) / height,
            (px + max(xs)) / width, (py + max(ys)) / height)


def _cos_sin(degrees: float) -> tuple[float, float]:
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    turn = degrees % 360.0
    if turn in exact:
        return exact[turn]
    return math.cos(math.radians(turn)), math.sin(math.radians(turn))


def _pixel_size(item: dict[str, Any],
                *, image_size: tuple[int, int] | None) -> tuple[float, float] | None:
    if "original_width" not in item or "original_height" not in item:
        return (float(image_size[0]), float(image_size[1])) if image_size else None
    ow, oh = _number(item, "original_width"), _number(item, "original_height")
    if ow <= 0 or oh <= 0:
        raise AnnotationError(BoxReason.MALFORMED, f"image size {ow} x {oh}")
    if image_size is None:
        return ow, oh
    if abs((ow / oh) / (image_size[0] / image_size[1]) - 1.0) > 0.01:
        raise AnnotationError(BoxReason.SIZE_MISMATCH,
                              f"drawn on {ow:g} x {oh:g}, the oriented image is "
                              f"{image_size[0]} x {image_size[1]}")
    return float(image_size[0]), float(image_size[1])


def _number(mapping: Mapping[str, Any], key: str, *, default: float | None = None) -> float:
    raw = mapping.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise AnnotationError(BoxReason.MALFORMED, f"{key} is not a number: {raw!r}")
    return float(raw)


# ---- checks shared by every source ------------------------------------------------------

def _checked_box(xywh: XYWH, label: Any, *, labels: AbstractSet[str],
                 settings: AnnotationSettings) -> tuple[Box, bool]:
    """The box clipped to the image, and whether it was clipped; ``_BoxDropped`` if unusable.

    ``label`` is a label or a list of labels as the source gave it. An unclipped box keeps
    its coordinates exactly.
    """
    name = _one_label(label, labels=labels)
    x, y, w, h = xywh
    if w <= 0.0 or h <= 0.0:
        raise _BoxDropped(BoxReason.DEGENERATE_BOX, f"zero or negative size: {xywh}")
    tol = settings.clip_tolerance
    if x < -tol or y < -tol or x + w > 1.0 + tol or y + h > 1.0 + tol:
        raise _BoxDropped(BoxReason.FAR_OUTSIDE, f"beyond the image by more than {tol}: {xywh}")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x, y, x + w, y + h))
    if x2 - x1 < settings.min_box_size or y2 - y1 < settings.min_box_size:
        raise _BoxDropped(BoxReason.DEGENERATE_BOX,
                          f"smaller than {settings.min_box_size} inside the image: {xywh}")
    if (x1, y1, x2, y2) == (x, y, x + w, y + h):
        return Box(x, y, w, h, name), False
    return Box.from_edges(x1, y1, x2, y2, name), True


def _one_label(label: Any, *, labels: AbstractSet[str]) -> str:
    names = [label] if isinstance(label, str) else label
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _BoxDropped(BoxReason.MISSING_LABEL, f"no label: {label!r}")
    distinct = {n.strip().lower() for n in names if n.strip()}
    if len(distinct) != 1:
        raise _BoxDropped(BoxReason.MISSING_LABEL, f"need exactly one label, got {names!r}")
    name = distinct.pop()
    if name not in labels:
        raise _BoxDropped(BoxReason.UNKNOWN_LABEL, f"unknown label {name!r}")
    return name


# ---- Label Studio out (pre-annotations) -------------------------------------------------

def to_labelstudio(boxes: Sequence[Box], leading_hand: str | None, *, width: int,
                   height: int) -> list[dict[str, Any]]:
    """A Label Studio result list for ``boxes`` (percent, rotation 0) and the leading hand.

    Used for pre-annotations (``predictions``) and by the simulated annotators;
    ``from_labelstudio`` reads it back. ``leading_hand`` None leaves the choice open.
    """
    result: list[dict[str, Any]] = [
        {"id": f"hand{i}", "from_name": BOX_CONTROL, "to_name": IMAGE_OBJECT,
         "type": "rectanglelabels", "original_width": width, "original_height": height,
         "image_rotation": 0,
         "value": {"x": b.x * 100, "y": b.y * 100, "width": b.w * 100, "height": b.h * 100,
                   "rotation": 0, "rectanglelabels": [b.label]}}
        for i, b in enumerate(boxes)
    ]
    if leading_hand is not None:
        result.append({"id": "leading", "from_name": LEADING_HAND_CONTROL,
                       "to_name": IMAGE_OBJECT, "type": "choices",
                       "value": {"choices": [leading_hand]}})
    return result


# ---- canonical answer (the answers table) and HaGRID entries ----------------------------

def answer_json(answer: ParsedAnnotation) -> str:
    """The canonical JSON of an answer: HaGRID entry fields, boxes sorted, rounded
    (``"leading_hand": null`` when unknown)."""
    rows = sorted((*(round(v, COORD_DECIMALS) for v in (b.x, b.y, b.w, b.h)), b.label)
                  for b in answer.boxes)
    return json.dumps({"bboxes": [list(r[:4]) for r in rows], "labels": [r[4] for r in rows],
                       "leading_hand": answer.leading_hand},
                      sort_keys=True, separators=(",", ":"))


def parse_answer_json(text: str) -> ParsedAnnotation:
    """Read back ``answer_json``; ``AnnotationError`` (malformed) on anything else.

    A null leading hand (a pre-annotation from a v2 entry) reads back as None.
    """
    try:
        entry = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(BoxReason.MALFORMED, f"not JSON: {exc}") from exc
    if not isinstance(entry, dict) or set(entry) != {"bboxes", "labels", "leading_hand"}:
        raise AnnotationError(BoxReason.MALFORMED, "need exactly bboxes, labels, leading_hand")
    pairs = [(_xywh(raw), name) for raw, name in _pairs(entry)]
    if (not pairs or entry["leading_hand"] not in (*LEADING_HANDS, None)
            or not all(_canonical(xywh, name) for xywh, name in pairs)):
        raise AnnotationError(BoxReason.MALFORMED, f"not a canonical answer: {text[:200]}")
    boxes = tuple(Box(x, y, min(w, 1.0 - x), min(h, 1.0 - y), name)
                  for (x, y, w, h), name in pairs)  # rounding may overshoot 1 by 1e-6
    return ParsedAnnotation(boxes, entry["leading_hand"])


def from_hagrid(entry: Mapping[str, Any], *, labels: AbstractSet[str],
                settings: AnnotationSettings | None = None,
                require_leading_hand: bool = True) -> ParsedAnnotation:
    """Check a HaGRID annotation entry (``bboxes``, ``labels``, ``leading_hand``) like an answer.

    Same granularity as ``from_labelstudio``: bad boxes dropped with a problem, a bad
    leading hand or no usable box rejects the entry. ``require_leading_hand=False`` accepts
    an entry without one (absent or null, as in the v2 format): the leading hand is then
    None; a value other than left or right is still rejected.
    """
    settings = settings or AnnotationSettings()
    raw = entry.get("leading_hand")
    leading = (None if raw is None and not require_leading_hand
               else _leading_hand([{"value": {"choices": [raw or ""]}}]))
    candidates = ((_xywh(raw), name) for raw, name in _pairs(entry))
    return _checked_answer(candidates, leading, labels=labels, settings=settings)


def _pairs(entry: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    bboxes, names = entry.get("bboxes"), entry.get("labels")
    if not isinstance(bboxes, list) or not isinstance(names, list) or len(bboxes) != len(names):
        raise AnnotationError(BoxReason.MALFORMED, "bboxes and labels: two lists of one length")
    return list(zip(bboxes, names, strict=True))


def _xywh(raw: Any) -> XYWH:
    if not isinstance(raw, list) or len(raw) != 4:
        raise AnnotationError(BoxReason.MALFORMED, f"a box is [x, y, w, h], got {raw!r}")
    x, y, w, h = (_number({"v": v}, "v") for v in raw)
    return x, y, w, h


def _canonical(xywh: XYWH, label: Any) -> bool:
    x, y, w, h = xywh
    slack = 2 * 10.0 ** -COORD_DECIMALS
    return (isinstance(label, str) and w > 0 and h > 0 and x >= 0 and y >= 0
            and x + w <= 1 + slack and y + h <= 1 + slack)


# ---- EXIF orientation: stored pixels -> upright image ------------------------------------

MIRRORING_ORIENTATIONS = frozenset({2, 4, 5, 7})  # a mirror image: left and right swap
_OTHER_HAND = {"left": "right", "right": "left"}


def upright_point(x: float, y: float, orientation: int) -> tuple[float, float]:
    """A point relative to the stored pixels, relative to the upright image instead.

    ``orientation``: the EXIF tag, 1-8 (1: already upright); ``ValueError`` otherwise.
    """
    turns: dict[int, tuple[float, float]] = {
        1: (x, y), 2: (1.0 - x, y), 3: (1.0 - x, 1.0 - y), 4: (x, 1.0 - y),
        5: (y, x), 6: (1.0 - y, x), 7: (1.0 - y, 1.0 - x), 8: (y, 1.0 - x)}
    if orientation not in turns:
        raise ValueError(f"EXIF orientation {orientation!r} is not one of 1-8")
    return turns[orientation]


def upright_box(box: Box, orientation: int) -> Box:
    """A box relative to the stored pixels, relative to the upright image instead."""
    if orientation == 1:
        return box
    (ax, ay), (bx, by) = (upright_point(*p, orientation) for p in
                          ((box.x, box.y), (box.x + box.w, box.y + box.h)))
    return Box.from_edges(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by), box.label)


def upright_annotation(answer: ParsedAnnotation, orientation: int) -> ParsedAnnotation:
    """An answer drawn on the stored pixels, on the upright image: boxes turned, and the
    leading hand swapped by a mirroring orientation (2, 4, 5, 7)."""
    if orientation == 1:
        return answer
    hand = answer.leading_hand
    if orientation in MIRRORING_ORIENTATIONS and hand is not None:
        hand = _OTHER_HAND[hand]
    return replace(answer, boxes=tuple(upright_box(b, orientation) for b in answer.boxes),
                   leading_hand=hand)
