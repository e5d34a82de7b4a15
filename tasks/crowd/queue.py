"""What a crowd stage does next with each image: decide, wait, re-queue or send to review.

A pure function over the stage's state, so a scheduled run can be replayed in a test:

- an expert review answer decides (the latest, when an image was reviewed again); a control (golden) image is decided by its known answer;
- an image never sent goes out (round 1, ``overlap`` answers; control images
  ``golden_overlap``);
- while answers are outstanding, it waits;
- a confident crowd verdict from at least ``min_credible`` credible answers decides (a
  credible flag excludes, whatever the confidence); an image that already has a crowd
  verdict keeps it when a refit is less sure, and is never asked again;
- otherwise ``requeue_answers`` more answers are asked, until ``max_answers`` have been
  asked; then it goes to expert review.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from schemas.crowd import CrowdSettings, Queue, Stage, Verdict
from tasks.crowd.consensus import CrowdVerdict, golden_verdict


@dataclass(frozen=True)
class ImageState:
    """What the catalog knows about one image in one stage."""

    image_id: str
    golden_answer: str | None = None  # set for control images
    crowd_asked: int = 0  # answers asked so far over every crowd round
    crowd_round: int = 0  # last crowd round pushed (0: never pushed)
    crowd_received: int = 0  # answers received for it from the crowd (any status)
    in_review: bool = False
    review_answer: str | None = None  # accepted expert answer (the latest), when there is one
    reviews: int = 0  # accepted expert answers so far (a flagged image may be reviewed again)
    decided: bool = False  # it already has a crowd verdict: never asked again


@dataclass(frozen=True)
class PushRequest:
    """One task to send: ``answers_wanted`` more answers for ``image_id`` in ``queue``."""

    image_id: str
    queue: Queue
    round: int
    answers_wanted: int
    asked_before: int
    is_golden: bool


@dataclass(frozen=True)
class Decision:
    """A verdict ready to be written to ``verdicts``."""

    image_id: str
    verdict: Verdict
    reason: str | None
    confidence: float
    n_answers: int
    method: str


@dataclass
class StagePlan:
    """Everything one run decides for a stage."""

    decisions: list[Decision] = field(default_factory=list)
    pushes: list[PushRequest] = field(default_factory=list)
    status: Counter[str] = field(default_factory=Counter)  # image counts per queue state


def plan_stage(stage: Stage, states: list[ImageState], crowd: dict[str, CrowdVerdict], *,
               settings: CrowdSettings, method: str) -> StagePlan:
    """Decisions and pushes for every image of a stage (see the module docstring)."""
    plan = StagePlan()
    for st in states:
        _plan_one(stage, st, crowd.get(st.image_id), plan, settings=settings, method=method)
    return plan


def _plan_one(stage: Stage, st: ImageState, cv: CrowdVerdict | None, plan: StagePlan, *,
              settings: CrowdSettings, method: str) -> None:
    if st.review_answer is not None:
        verdict, reason = golden_verdict(stage, st.review_answer)
        # n_answers counts the reviews, so a later review is a new verdict (and new boxes)
        plan.decisions.append(Decision(st.image_id, verdict, reason, 1.0, max(1, st.reviews),
                                       "review"))
        plan.status["decided_by_review"] += 1
        return
    if st.golden_answer is not None:
        verdict, reason = golden_verdict(stage, st.golden_answer)
        plan.decisions.append(Decision(st.image_id, verdict, reason, 1.0, 0, "golden"))
        plan.status["control"] += 1
        if st.crowd_round == 0:
            plan.pushes.append(PushRequest(st.image_id, Queue.CROWD, 1, settings.golden_overlap,
                                           0, True))
        return
    if st.crowd_round == 0 and st.decided:  # decided without this crowd: an import
        plan.status["decided_elsewhere"] += 1
        return
    if st.crowd_round == 0:
        plan.pushes.append(PushRequest(st.image_id, Queue.CROWD, 1, settings.overlap, 0, False))
        plan.status["sent"] += 1
        return
    if st.in_review:
        plan.status["waiting_review"] += 1
        return
    if cv is not None and cv.verdict is Verdict.EXCLUDED:
        plan.decisions.append(_decision(cv, method))  # one credible flag is enough
        plan.status["decided"] += 1
        return
    if st.crowd_received < st.crowd_asked:
        plan.status["waiting_crowd"] += 1
        return
    if cv is not None and cv.n_answers >= min(settings.min_credible, settings.overlap) and (
            cv.confidence >= settings.min_confidence):
        plan.decisions.append(_decision(cv, method))
        plan.status["decided"] += 1
        return
    if st.decided:  # a later refit is less sure: keep the verdict rather than ask again
        plan.status["kept"] += 1
        return
    _requeue_or_review(st, plan, settings=settings)


def _requeue_or_review(st: ImageState, plan: StagePlan, *, settings: CrowdSettings) -> None:
    room = settings.max_answers - st.crowd_asked
    if room > 0:
        plan.pushes.append(PushRequest(st.image_id, Queue.CROWD, st.crowd_round + 1,
                                       min(settings.requeue_answers, room), st.crowd_asked,
                                       False))
        plan.status["requeued"] += 1
    else:
        plan.pushes.append(PushRequest(st.image_id, Queue.REVIEW, 1, 1, 0, False))
        plan.status["sent_to_review"] += 1


def _decision(cv: CrowdVerdict, method: str) -> Decision:
    return Decision(cv.image_id, cv.verdict, cv.reason, round(cv.confidence, 6), cv.n_answers,
                    method)
