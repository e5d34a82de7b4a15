"""The ``annotate`` flow: stage 4, hand boxes and the leading hand.

It runs the same pull / decide / push cycle as the crowd stages (``flows.crowd``), with the
annotation stage's box consensus deciding.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.crowd import run_crowd_stage
from flows.ingest import DEFAULT_ROOT
from flows.run_names import run_name
from schemas.annotation import AnnotationSettings
from schemas.crowd import CrowdBackendOptions, CrowdSettings, Stage
from schemas.taxonomy import DEFAULT_TAXONOMY, load_taxonomy


@flow(name="annotate", flow_run_name=run_name("annotate", "root"), log_prints=True)
def annotate(root: str = DEFAULT_ROOT, crowd: str = "simulated", overlap: int = 3,
             min_agreement: float = 0.7, match_iou: float = 0.5, max_answers: int = 7,
             cycles: int = 1, options: CrowdBackendOptions | None = None,
             s3_endpoint_url: str | None = None, wait_for_lock: float = 0.0,
             taxonomy: str = DEFAULT_TAXONOMY) -> dict[str, Any]:
    """Stage 4: hand boxes and the leading hand, from ``overlap`` annotators per image.

    Only images accepted by validation and not excluded by filtration are sent; images with
    a pre-annotation (``hagrid import-hagrid --mode preannotate``) carry it as a prediction.
    Images whose annotators agree less than ``min_agreement`` (mean IoU) are re-queued, then
    reviewed. Images an audit flagged (``label_issues``, ``hagrid audit``) go to expert review
    once per flag, showing their current boxes and what the audit suspects; the reviewer's
    answer replaces their boxes (method ``review``) for the next release
    (``tasks.annotate.label_review``). A box label outside ``taxonomy``'s box labels (``hagrid_v1``, or ``hagrid_v2``
    with its two-handed gestures) is dropped as ``unknown_label``.
    """
    load_taxonomy(taxonomy)  # an unknown name fails here, before any work
    settings = CrowdSettings(overlap=overlap, min_confidence=min_agreement,
                             max_answers=max(max_answers, overlap), method="median_edges")
    boxes = AnnotationSettings(overlap=overlap, match_iou=match_iou, min_agreement=min_agreement,
                               max_answers=max(max_answers, overlap), taxonomy=taxonomy)
    opts = options or CrowdBackendOptions(kind=crowd)
    return run_crowd_stage(Stage.ANNOTATION, root=root, options=opts, settings=settings,
                           cycles=cycles, s3_endpoint_url=s3_endpoint_url, annotation=boxes,
                           wait_for_lock=wait_for_lock)
