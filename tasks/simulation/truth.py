"""The truth of a synthetic batch: what the pipeline should decide for each file or row.

One `schemas.simulation.TruthRecord` per planned file or row, from its plan and the
geometry of what was written (`truth_record`); `plant_truth_file` plants one for catalogs
made without drawn pictures (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from schemas.annotation import FREE_HAND_LABEL, LEADING_HANDS
from schemas.crowd import FILTRATION_FLAGS, NO, NONE_FLAG, VALIDATION_REASONS, YES
from schemas.reasons import Outcome
from schemas.simulation import TruthRecord
from tasks.simulation.photos import PhotoGeometry
from tasks.simulation.planning import PlannedFile
from tasks.simulation.problems import EXPECTED_REASON
from tasks.storage import Storage


def truth_record(planned: PlannedFile, geometry: PhotoGeometry | None,
                 planned_source: PlannedFile | None = None) -> TruthRecord:
    """The truth line for one planned file or row (``planned_source``: the original a
    resubmission was made from, whose picture it shows)."""
    reason = EXPECTED_REASON[planned.kind]
    photo = planned.photo or (planned_source.photo if planned_source else None)
    return {
        "file": planned.file,
        "kind": planned.kind,
        "expected_outcome": Outcome.ACCEPTED if reason is None else Outcome.REJECTED,
        "expected_reason": reason,
        "duplicate_of_file": planned.source_file,
        "same_worker": planned.same_worker,
        "user_id": planned.user_id,
        "gesture": planned.gesture,
        "scene_family": planned.scene_family,
        "width": geometry.width if geometry else None,
        "height": geometry.height if geometry else None,
        "bboxes": [list(b) for b in geometry.bboxes] if geometry else [],
        "labels": list(geometry.labels) if geometry else [],
        "leading_hand": (geometry.leading_hand or None) if geometry else None,
        "validation": planned.validation,
        "filtration": ",".join(planned.flags) or NONE_FLAG,
        "planted_flags": list(planned.planted_flags),
        "shown_gesture": photo.gesture if photo else planned.gesture,
        "inscription": photo.inscription if photo else None,
        "framing": photo.framing if photo else None,
    }


def plant_truth_file(source: Storage, images: Sequence[tuple[str, str]], *, seed: int,
                     invalid_rate: float = 0.2, flag_rate: float = 0.12,
                     two_hands: float = 0.3) -> dict[str, str]:
    """Write ``truth.jsonl`` for images that have no drawn picture (catalogs made directly by
    tests and benchmarks, of noise pictures): answers and hands planted per (seed, file).

    ``images``: (file, gesture) pairs. Every planted answer is marked in ``planted_flags``
    (``validation`` and the flags). Returns file -> its validation answer.
    """
    lines, answers = [], {}
    for file, gesture in images:
        rng = np.random.default_rng(list(hashlib.sha256(f"{seed}|{file}".encode()).digest()))
        validation = YES
        if rng.random() < invalid_rate:
            validation = f"{NO}:{VALIDATION_REASONS[int(rng.integers(len(VALIDATION_REASONS)))]}"
        flags = NONE_FLAG
        if rng.random() < flag_rate:
            flags = FILTRATION_FLAGS[int(rng.integers(len(FILTRATION_FLAGS)))]
        boxes = [_planted_box(rng, left_half=True)]
        labels = [gesture]
        if rng.random() < two_hands:
            boxes.append(_planted_box(rng, left_half=False))
            labels.append(FREE_HAND_LABEL)
        hand = LEADING_HANDS[int(rng.integers(2))]
        answers[file] = validation
        lines.append(json.dumps({
            "file": file, "kind": "planted", "expected_outcome": Outcome.ACCEPTED,
            "expected_reason": None, "duplicate_of_file": None, "same_worker": None,
            "user_id": None, "gesture": gesture, "scene_family": None, "width": None,
            "height": None, "bboxes": boxes, "labels": labels, "leading_hand": hand,
            "validation": validation, "filtration": flags,
            "planted_flags": ["validation", *([] if flags == NONE_FLAG else [flags])],
            "shown_gesture": gesture, "inscription": None, "framing": None}))
    source.write_bytes("truth.jsonl", ("\n".join(lines) + "\n").encode())
    return answers


def _planted_box(rng: np.random.Generator, *, left_half: bool) -> list[float]:
    w, h = float(rng.uniform(0.05, 0.15)), float(rng.uniform(0.08, 0.2))
    x0 = 0.02 if left_half else 0.52
    return [round(float(rng.uniform(x0, x0 + 0.46 - w)), 6),
            round(float(rng.uniform(0.02, 0.98 - h)), 6), round(w, 6), round(h, 6)]
