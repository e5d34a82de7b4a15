"""Vocabularies and settings of the crowd stages: validation and ethical filtration.

Answers are stored in one canonical string form per stage, so a vote compares strings:

- validation: ``yes``, or ``no:<reason>`` with a reason from ``VALIDATION_REASONS``;
- filtration: ``none``, or the raised flags from ``FILTRATION_FLAGS``, sorted and joined by
  commas (``child,text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """A crowd stage. Values are stored in the catalog: never rename one."""

    VALIDATION = "validation"
    FILTRATION = "filtration"
    ANNOTATION = "annotation"  # boxes and leading hand (schemas.annotation)


CHOICE_STAGES = (Stage.VALIDATION, Stage.FILTRATION)  # the stages answered by picking choices


class Queue(StrEnum):
    """Who answers: the crowd (k answers per image) or an expert (one review answer)."""

    CROWD = "crowd"
    REVIEW = "review"


class Verdict(StrEnum):
    """The outcome of a stage for one image."""

    ACCEPTED = "accepted"  # validation: the worker followed the task
    REJECTED = "rejected"  # validation: they did not (the reason says why)
    CLEAR = "clear"  # filtration: nothing that must be removed
    EXCLUDED = "excluded"  # filtration: at least one credible flag (the reason lists them)
    ANNOTATED = "annotated"  # annotation: boxes and leading hand are in the boxes table


class AnswerReason(StrEnum):
    """Why a raw answer was not aggregated. Stored in ``answers.reason``."""

    UNKNOWN_CHOICE = "unknown_choice"  # a value outside the stage's vocabulary
    MISSING_FIELD = "missing_field"  # no answer, no worker, no image, or no reason for a no
    CONTRADICTORY = "contradictory"  # e.g. "none" together with a flag, or two yes/no values
    UNKNOWN_IMAGE = "unknown_image"  # the image is not pending in this stage
    DUPLICATE_ANSWER = "duplicate_answer"  # the same worker already answered this image
    SKIPPED = "skipped"  # the annotator skipped (cancelled) the task
    WRONG_STAGE = "wrong_stage"  # an answer file row for another stage
    UNREADABLE = "unreadable"  # the answer table or payload could not be parsed at all


YES = "yes"
NO = "no"
NONE_FLAG = "none"
VALIDATION_REASONS: tuple[str, ...] = (
    "wrong_gesture", "hand_cut_off", "bad_distance", "not_real_photo", "other",
)
FILTRATION_FLAGS: tuple[str, ...] = ("child", "nudity", "text", "personal_data")


def stage_choices(stage: Stage) -> tuple[str, ...]:
    """Every canonical answer a worker can give in ``stage`` (single flags for filtration)."""
    if stage is Stage.VALIDATION:
        return (YES, *(f"{NO}:{r}" for r in VALIDATION_REASONS))
    return (NONE_FLAG, *FILTRATION_FLAGS)


class FlagPolicy(StrEnum):
    """When a filtration flag is credible enough to exclude an image (erring toward exclusion).

    ``aggregate`` (default): the method's P(flag) >= ``flag_threshold`` (0.3, below even
    odds): one flag from a worker the model trusts is enough, one from a worker it does not
    is not. ``any_credible``: ``min_flag_votes`` answers from workers who are not discounted;
    simplest, but each answer is a chance of a stray flag (bench/RESULTS.md: 38% of clean
    images excluded with the simulated crowd, against 4% for ``aggregate`` with ``ds``).
    """

    ANY_CREDIBLE = "any_credible"
    AGGREGATE = "aggregate"


@dataclass(frozen=True)
class CrowdSettings:
    """How a crowd stage asks, aggregates and decides. Passed explicitly, never global.

    - ``overlap``: answers asked per image in the first round; a crowd verdict needs at least
      ``min_credible`` answers (at most ``overlap``) from workers who are not discounted.
    - ``requeue_answers`` more answers are asked when a verdict is not confident, until an
      image has had ``max_answers`` asked; after that it goes to expert review.
    - ``min_confidence``: a verdict below it is not final.
    - ``golden_overlap``: answers asked for each control (golden) image, so that many
      workers meet control tasks.
    - Workers with at least ``min_golden`` control answers, ``min_golden_per_class`` of them
      on each side (right and wrong, flag and no flag), and a balanced accuracy on them below
      ``skill_floor`` are discounted: their answers are not aggregated.
    - ``method``: the aggregation method (``tasks.crowd.consensus.METHODS``).
    """

    overlap: int = 3
    min_credible: int = 3
    requeue_answers: int = 2
    max_answers: int = 7
    min_confidence: float = 0.9
    golden_overlap: int = 10
    skill_floor: float = 0.7
    min_golden: int = 3
    min_golden_per_class: int = 2
    method: str = "ds"
    flag_policy: FlagPolicy = FlagPolicy.AGGREGATE
    min_flag_votes: int = 1
    flag_threshold: float = 0.3

    def __post_init__(self) -> None:
        if self.overlap < 1 or self.requeue_answers < 1 or self.max_answers < self.overlap:
            raise ValueError("need overlap >= 1, requeue_answers >= 1, max_answers >= overlap")
        if not 0.0 <= self.min_confidence <= 1.0 or not 0.0 <= self.skill_floor <= 1.0:
            raise ValueError("min_confidence and skill_floor are probabilities")


@dataclass(frozen=True)
class CrowdBackendOptions:
    """Which crowd back end a stage run uses, and its connection settings.

    ``kind``: ``labelstudio`` (people, the default in production), ``file`` (answer tables
    from another platform; ``answers`` lists files to import first) or ``simulated``.
    """

    kind: str = "simulated"
    answers: tuple[str, ...] = ()
    ls_url: str | None = None  # default: $LABEL_STUDIO_URL
    ls_token: str | None = None  # default: $LABEL_STUDIO_API_KEY
    ls_project_prefix: str = "hagrid"
    ls_document_root: str | None = None  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT of the server
    # the campaign's reference pictures: a folder (local or s3://) of <gesture>.png/.jpg, one
    # per gesture class, shown beside each photo and in the instructions (None: not shown)
    ls_references: str | None = None
    sim_seed: int = 0
    sim_workers: int = 20
    sim_spammer_share: float = 0.3
    sim_golden: int = 12  # control images per stage picked from the generator's truth
