"""Planning a synthetic batch (pure, no I/O): who submits what, in which order.

Originals come in scene families (distinct photos of the same room: hard negatives);
resubmissions are edited copies placed later in the table, half by the same worker; one of
each problem kind is placed anywhere. Files are named by their position in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.crowd import FILTRATION_FLAGS, NO, YES
from tasks.simulation.drawing import RGB, jitter
from tasks.simulation.people import (
    HAGRID_V1_GESTURES,
    HAIRS,
    NO_GESTURE,
    POSES,
    SKINS,
    UNKNOWN_GESTURE,
)
from tasks.simulation.photos import PLAN_STREAM, Camera, Lighting, PhotoSpec
from tasks.simulation.problems import PROBLEM_KINDS, RESUBMISSION_KINDS, TOO_SMALL_SIZE, Edit


@dataclass(frozen=True)
class PlannedFile:
    """One file and/or one table row of a batch, in table order."""

    file: str
    kind: str
    has_row: bool
    user_id: str | None
    gesture: str | None
    submitted_at: str | None
    scene_family: int | None
    photo: PhotoSpec | None = None
    quality: int = 90
    orientation: int = 1
    source_file: str | None = None
    same_worker: bool | None = None
    edit: Edit | None = None
    validation: str = YES  # the right validation answer: yes, or no:<reason>
    flags: tuple[str, ...] = ()  # what filtration should raise (FILTRATION_FLAGS order)
    planted_flags: tuple[str, ...] = ()  # of those, the ones not drawn (child, nudity)


@dataclass(eq=False)
class _Draft:
    kind: str
    user_id: str | None
    gesture: str | None
    has_row: bool = True
    scene_family: int | None = None
    photo: PhotoSpec | None = None
    quality: int = 90
    orientation: int = 1
    source: _Draft | None = None
    same_worker: bool | None = None
    edit: Edit | None = None
    suffix: str = ".jpg"
    validation: str = YES
    flags: tuple[str, ...] = ()
    planted_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Setup:
    """What every planning step needs: the seed, options and the crowd (ids and looks)."""

    seed: int
    gestures: tuple[str, ...]
    size: tuple[int, int]
    quality: int
    user_ids: tuple[str, ...]
    skin: dict[str, RGB]
    hair: dict[str, RGB]

    def jpeg_quality(self, rng: np.random.Generator) -> int:
        """The configured quality give or take 5, as phones and apps differ."""
        return int(np.clip(self.quality + rng.integers(-5, 6), 1, 100))


def plan_batch(
    *,
    n: int,
    seed: int,
    gestures: Sequence[str] = HAGRID_V1_GESTURES,
    dup_rate: float = 0.15,
    problems: bool = True,
    hard_negatives: bool = True,
    size: tuple[int, int] = (1920, 1080),
    quality: int = 90,
) -> list[PlannedFile]:
    """Plan a batch (no I/O): every file and row in table order, with what to render or edit."""
    _check_options(n=n, gestures=gestures, dup_rate=dup_rate, size=size, quality=quality)
    rng = np.random.default_rng([seed, PLAN_STREAM])
    setup = _plan_setup(rng, seed=seed, n=n, gestures=gestures, size=size, quality=quality)
    originals: list[_Draft] = []
    for family, members in enumerate(_family_sizes(rng, n, hard_negatives)):
        originals += _plan_family(rng, setup, family=family, members=members, key=len(originals))
    count = round(dup_rate * n)
    if dup_rate > 0 and n >= 40:
        count = max(count, len(RESUBMISSION_KINDS))
    resubmissions = _plan_resubmissions(rng, setup, originals, count=count)
    extra = _plan_problems(rng, setup, key=n) if problems else []
    return _finalize(rng, _order(rng, originals, resubmissions, extra))


def _check_options(
    *, n: int, gestures: Sequence[str], dup_rate: float, size: tuple[int, int], quality: int
) -> None:
    unknown = sorted(set(gestures) - set(POSES) | ({NO_GESTURE, UNKNOWN_GESTURE} & set(gestures)))
    if unknown:
        raise ValueError(f"no hand pose for gestures {unknown}; known: {sorted(POSES)}")
    if n < 1 or not gestures:
        raise ValueError("need n >= 1 and at least one gesture")
    if not 0 <= dup_rate <= 1 or not 1 <= quality <= 100 or min(size) < 64:
        raise ValueError(f"bad dup_rate {dup_rate}, quality {quality} or size {size}")


def _plan_setup(
    rng: np.random.Generator,
    *,
    seed: int,
    n: int,
    gestures: Sequence[str],
    size: tuple[int, int],
    quality: int,
) -> _Setup:
    count = max(6, n // 3 + 2)
    ids = tuple(f"w{int(v):05d}" for v in rng.choice(np.arange(1, 100_000), count, replace=False))
    skin = {w: jitter(rng, SKINS[int(rng.integers(len(SKINS)))], 0.03) for w in ids}
    hair = {w: jitter(rng, HAIRS[int(rng.integers(len(HAIRS)))], 0.03) for w in ids}
    landscape = (max(size), min(size))
    return _Setup(seed, tuple(gestures), landscape, quality, ids, skin, hair)


def _family_sizes(rng: np.random.Generator, n: int, hard_negatives: bool) -> list[int]:
    if not hard_negatives:
        return [1] * n
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(2, 7)), n - sum(sizes)))
    return sizes


def _plan_family(
    rng: np.random.Generator, setup: _Setup, *, family: int, members: int, key: int
) -> list[_Draft]:
    """Originals sharing a room (layout and palette): other people, camera, light; often the
    same gesture."""
    width, height = setup.size
    frame = (height, width) if rng.random() < 0.3 else (width, height)
    theme = str(rng.choice(setup.gestures))
    workers = rng.choice(setup.user_ids, members, replace=members > len(setup.user_ids))
    drafts = []
    for i, (camera, worker) in enumerate(zip(_family_cameras(rng, members), workers, strict=True)):
        gesture = theme if rng.random() < 0.7 else str(rng.choice(setup.gestures))
        spec = _photo_spec(rng, setup, str(worker), key=key + i, size=frame, room=family)
        orientation = int(rng.choice([6, 8, 3])) if rng.random() < 0.1 else 1
        draft = _Draft(
            "original", str(worker), gesture, scene_family=family, orientation=orientation
        )
        draft.photo = replace(spec, camera=camera, gesture=gesture)
        draft.quality = setup.jpeg_quality(rng)
        _plant_crowd_truth(rng, setup, draft)
        drafts.append(draft)
    return drafts


# Shares of originals that break a mining rule (validation), carry an inscription, or are
# declared to show a child or nudity (filtration). Rule breaks and inscriptions are drawn.
RULE_BREAK_RATE, INSCRIPTION_RATE, PLANTED_FLAG_RATE = 0.12, 0.06, 0.04
RULE_BREAKS: dict[str, str] = {  # what is drawn -> the right validation answer
    "wrong_gesture": f"{NO}:wrong_gesture", "hand_cut_off": f"{NO}:hand_cut_off",
    "too_far": f"{NO}:bad_distance", "too_close": f"{NO}:bad_distance",
}
INSCRIPTIONS: tuple[str, ...] = (
    "OPEN 24/7", "SALE -50%", "HELLO", "I LOVE NY", "TEAM 21", "NO PARKING", "Cafe Luna",
    "EXIT", "RUN CLUB", "BOOKS",
)  # fmt: skip
PLANTED_FLAGS: tuple[str, ...] = ("child", "nudity")  # cannot be drawn honestly


def _plant_crowd_truth(rng: np.random.Generator, setup: _Setup, draft: _Draft) -> None:
    """Decide what the crowd stages should find in an original, and draw what can be drawn:
    another gesture than the assigned one, the gesture hand cut by the frame, the person too
    far or too close; an inscription. Children and nudity are planted flags (truth only)."""
    assert draft.photo is not None
    breaks = [b for b in RULE_BREAKS if b != "wrong_gesture" or len(setup.gestures) > 1]
    flags: set[str] = set()
    if rng.random() < RULE_BREAK_RATE:
        kind = str(rng.choice(breaks))
        draft.validation = RULE_BREAKS[kind]
        if kind == "wrong_gesture":  # the row keeps the assigned gesture; the pose differs
            shown = str(rng.choice([g for g in setup.gestures if g != draft.gesture]))
            draft.photo = replace(draft.photo, gesture=shown)
        else:
            draft.photo = replace(draft.photo, framing=kind)
    if rng.random() < INSCRIPTION_RATE:
        text = str(rng.choice(INSCRIPTIONS))
        draft.photo = replace(draft.photo, inscription=text)
        flags.add("text")
    if rng.random() < PLANTED_FLAG_RATE:
        planted = str(rng.choice(PLANTED_FLAGS))
        draft.planted_flags = (planted,)
        flags.add(planted)
    draft.flags = tuple(f for f in FILTRATION_FLAGS if f in flags)


def _family_cameras(rng: np.random.Generator, members: int) -> list[Camera]:
    """Camera set-ups at least 5% apart in zoom or shift from each other."""
    cameras: list[Camera] = []
    for _ in range(members * 40):
        if len(cameras) == members:
            break
        shift = (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.06, 0.06)))
        new = Camera(zoom=float(rng.uniform(0.92, 1.2)), shift=shift)
        gaps = [
            max(
                abs(new.zoom - c.zoom),
                abs(new.shift[0] - c.shift[0]),
                abs(new.shift[1] - c.shift[1]),
            )
            for c in cameras
        ]
        if min(gaps, default=1.0) >= 0.05:
            cameras.append(new)
    while len(cameras) < members:
        cameras.append(Camera(zoom=1.0 + 0.05 * len(cameras), shift=(0.0, 0.0)))
    return cameras


def _photo_spec(
    rng: np.random.Generator,
    setup: _Setup,
    worker: str,
    *,
    key: int,
    size: tuple[int, int],
    room: int,
) -> PhotoSpec:
    """A photo of `worker` with random light, gesture, leading hand and maybe a free hand."""
    tint = (float(1 + rng.uniform(-0.07, 0.07)), 1.0, float(1 + rng.uniform(-0.07, 0.07)))
    lighting = Lighting(
        gain=float(rng.uniform(0.75, 1.2)),
        tint=tint,
        slope=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.3, 0.2))),
        glow=float(rng.uniform(0.0, 1.0)),
        vignette=float(rng.uniform(0.1, 0.45)),
    )
    camera = Camera(zoom=float(rng.uniform(0.92, 1.2)), shift=(0.0, 0.0))
    return PhotoSpec(
        seed=setup.seed,
        key=key,
        size=size,
        room=room,
        camera=camera,
        lighting=lighting,
        skin=setup.skin[worker],
        hair=setup.hair[worker],
        gesture=str(rng.choice(setup.gestures)),
        leading_hand="right" if rng.random() < 0.6 else "left",
        free_hand=bool(rng.random() < 0.3),
    )


def _plan_resubmissions(
    rng: np.random.Generator, setup: _Setup, originals: list[_Draft], *, count: int
) -> list[_Draft]:
    """`count` edited copies of random originals, every kind once before any repeats; half by
    the same worker, half from another account."""
    kinds = [str(k) for k in rng.permutation(RESUBMISSION_KINDS)][:count]
    kinds += [str(k) for k in rng.choice(RESUBMISSION_KINDS, max(count - len(kinds), 0))]
    sources = rng.choice(len(originals), count, replace=count > len(originals))
    same = rng.permutation(np.arange(count) % 2 == 0)
    drafts = []
    for kind, index, same_worker in zip(kinds, sources, same, strict=True):
        source = originals[int(index)]
        user = source.user_id
        if not same_worker:
            user = str(rng.choice([w for w in setup.user_ids if w != source.user_id]))
        size = source.photo.size if source.photo else setup.size
        draft = _Draft(kind, user, source.gesture, scene_family=source.scene_family,
                       validation=source.validation, flags=source.flags,
                       planted_flags=source.planted_flags)
        draft.source, draft.same_worker = source, bool(same_worker)
        draft.edit = _plan_edit(rng, kind, size, setup.jpeg_quality(rng))
        draft.suffix = ".png" if kind == "png" else ".jpg"
        drafts.append(draft)
    return drafts


def _plan_edit(rng: np.random.Generator, kind: str, size: tuple[int, int], quality: int) -> Edit:
    edit = Edit(kind, quality=quality)
    if kind == "recompressed":
        return replace(edit, quality=int(rng.integers(55, 76)))
    if kind == "resized":  # 1920x1080 -> 1280x720 or 1600x900; short side kept >= 720
        scale, short = float(rng.choice([2 / 3, 5 / 6])), min(size)
        return replace(edit, scale=720 / short if short * scale < 720 <= short else scale)
    if kind == "cropped":
        sides = rng.choice(4, int(rng.integers(1, 3)), replace=False)
        crop = [float(rng.uniform(0.02, 0.05)) if i in sides else 0.0 for i in range(4)]
        return replace(edit, crop=(crop[0], crop[1], crop[2], crop[3]))
    if kind == "brightness":
        factor = rng.uniform(0.75, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3)
        return replace(edit, factor=float(factor))
    if kind == "blurred":
        return replace(edit, radius=float(rng.uniform(1.5, 3.0)))
    if kind == "exif_rotated":
        return replace(edit, orientation=int(rng.choice([6, 8])))
    return edit


_PHOTO_PROBLEMS = ("corrupt", "truncated", "too_small", "no_row", "unknown_gesture")


def _plan_problems(rng: np.random.Generator, setup: _Setup, *, key: int) -> list[_Draft]:
    """One of each problem kind; those made from a real photo get their own private room."""
    drafts = []
    for i, kind in enumerate(PROBLEM_KINDS):
        worker = str(rng.choice(setup.user_ids))
        draft = _Draft(kind, worker, str(rng.choice(setup.gestures)))
        draft.quality = setup.jpeg_quality(rng)
        if kind in _PHOTO_PROBLEMS:
            size = TOO_SMALL_SIZE if kind == "too_small" else setup.size
            spec = _photo_spec(rng, setup, worker, key=key + i, size=size, room=key + i)
            pose = UNKNOWN_GESTURE if kind == "unknown_gesture" else str(draft.gesture)
            draft.photo = replace(spec, gesture=pose)
        if kind == "unknown_gesture":
            draft.gesture = UNKNOWN_GESTURE
        elif kind == "no_row":
            draft.has_row, draft.user_id, draft.gesture = False, None, None
        elif kind == "decompression_bomb":
            draft.suffix = ".png"
        drafts.append(draft)
    return drafts


def _order(
    rng: np.random.Generator,
    originals: list[_Draft],
    resubmissions: list[_Draft],
    extra: list[_Draft],
) -> list[_Draft]:
    """Originals shuffled; each resubmission somewhere after its original; problems anywhere."""
    order = [originals[int(i)] for i in rng.permutation(len(originals))]
    for draft in resubmissions:
        after = next(i for i, d in enumerate(order) if d is draft.source) + 1
        order.insert(int(rng.integers(after, len(order) + 1)), draft)
    for draft in extra:
        order.insert(int(rng.integers(0, len(order) + 1)), draft)
    return order


def _finalize(rng: np.random.Generator, order: list[_Draft]) -> list[PlannedFile]:
    """Name files by position (photos/000001.jpg ...) and stamp rows with increasing times."""
    names = {id(d): f"photos/{i + 1:06d}{d.suffix}" for i, d in enumerate(order)}
    clock = datetime(2024, 1, 8, 8, 0, tzinfo=UTC) + timedelta(days=int(rng.integers(0, 300)))
    planned = []
    for d in order:
        stamp = None
        if d.has_row:
            clock += timedelta(seconds=int(rng.integers(20, 900)))
            stamp = clock.strftime("%Y-%m-%dT%H:%M:%SZ")
        source = names[id(d.source)] if d.source is not None else None
        planned.append(
            PlannedFile(
                file=names[id(d)],
                kind=d.kind,
                has_row=d.has_row,
                user_id=d.user_id,
                gesture=d.gesture,
                submitted_at=stamp,
                scene_family=d.scene_family,
                photo=d.photo,
                quality=d.quality,
                orientation=d.orientation,
                source_file=source,
                same_worker=d.same_worker,
                edit=d.edit,
                validation=d.validation,
                flags=d.flags,
                planted_flags=d.planted_flags,
            )
        )
    return planned
