"""The truth of a synthetic batch: what the pipeline should decide for each file or row.

One `schemas.simulation.TruthRecord` per planned file or row, from its plan and the
geometry of what was written.
"""

from __future__ import annotations

from schemas.reasons import Outcome
from schemas.simulation import TruthRecord
from tasks.simulation.photos import PhotoGeometry
from tasks.simulation.planning import PlannedFile
from tasks.simulation.problems import EXPECTED_REASON


def truth_record(planned: PlannedFile, geometry: PhotoGeometry | None) -> TruthRecord:
    """The truth line for one planned file or row."""
    reason = EXPECTED_REASON[planned.kind]
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
    }
