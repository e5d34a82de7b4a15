"""What a stage does next with each image (pure planning)."""

from __future__ import annotations

from schemas.crowd import CrowdSettings, Queue, Stage, Verdict
from tasks.crowd.consensus import CrowdVerdict
from tasks.crowd.queue import ImageState, plan_stage

S = CrowdSettings(overlap=3, requeue_answers=2, max_answers=5, min_confidence=0.75,
                  golden_overlap=8)


def plan(state: ImageState, cv: CrowdVerdict | None = None, stage: Stage = Stage.VALIDATION):
    crowd = {} if cv is None else {cv.image_id: cv}
    return plan_stage(stage, [state], crowd, settings=S, method="ds")


def cv(verdict=Verdict.ACCEPTED, confidence=1.0, n=3, reason=None):
    return CrowdVerdict("x", verdict, reason, confidence, n)


def test_new_images_go_out_and_control_images_get_more_answers():
    p = plan(ImageState("x"))
    assert [(q.queue, q.round, q.answers_wanted) for q in p.pushes] == [(Queue.CROWD, 1, 3)]
    p = plan(ImageState("x", golden_answer="no:other"))
    assert [(q.answers_wanted, q.is_golden) for q in p.pushes] == [(8, True)]
    assert [(d.verdict, d.reason, d.method) for d in p.decisions] == [
        (Verdict.REJECTED, "other", "golden")]


def test_waiting_then_deciding():
    st = ImageState("x", crowd_asked=3, crowd_round=1, crowd_received=2)
    assert plan(st, cv()).status == {"waiting_crowd": 1}
    st = ImageState("x", crowd_asked=3, crowd_round=1, crowd_received=3)
    [d] = plan(st, cv(confidence=0.9)).decisions
    assert (d.verdict, d.confidence, d.method) == (Verdict.ACCEPTED, 0.9, "ds")


def test_unsure_or_too_few_credible_answers_are_requeued_then_reviewed():
    st = ImageState("x", crowd_asked=3, crowd_round=1, crowd_received=3)
    for unsure in (cv(confidence=0.6), cv(n=1), None):
        [push] = plan(st, unsure).pushes
        assert (push.queue, push.round, push.answers_wanted, push.asked_before) == (
            Queue.CROWD, 2, 2, 3)
    st = ImageState("x", crowd_asked=5, crowd_round=2, crowd_received=5)
    [push] = plan(st, cv(confidence=0.6)).pushes
    assert push.queue is Queue.REVIEW
    st = ImageState("x", crowd_asked=5, crowd_round=2, crowd_received=5, in_review=True)
    assert plan(st, cv(confidence=0.6)).status == {"waiting_review": 1}
    st = ImageState("x", crowd_asked=5, crowd_round=2, crowd_received=5, in_review=True,
                    review_answer="no:bad_distance")
    [d] = plan(st, cv(confidence=0.6)).decisions
    assert (d.verdict, d.reason, d.method) == (Verdict.REJECTED, "bad_distance", "review")


def test_a_decided_image_keeps_its_verdict_when_a_refit_is_less_sure():
    st = ImageState("x", crowd_asked=3, crowd_round=1, crowd_received=3, decided=True)
    p = plan(st, cv(confidence=0.6))
    assert (p.pushes, p.decisions, p.status) == ([], [], {"kept": 1})


def test_an_image_decided_without_the_crowd_is_not_sent():
    p = plan(ImageState("x", decided=True))
    assert (p.pushes, p.decisions, p.status) == ([], [], {"decided_elsewhere": 1})


def test_a_credible_flag_excludes_at_once():
    st = ImageState("x", crowd_asked=3, crowd_round=1, crowd_received=1)
    [d] = plan(st, cv(Verdict.EXCLUDED, confidence=0.2, n=1, reason="child"),
               stage=Stage.FILTRATION).decisions
    assert (d.verdict, d.reason) == (Verdict.EXCLUDED, "child")
