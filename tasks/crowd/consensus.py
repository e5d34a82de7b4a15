"""Consensus over crowd answers with crowd-kit: worker quality, then one verdict per image.

Inputs are long tables (``image_id, worker_id, answer``) of accepted crowd answers, in
canonical form (``schemas.crowd``), and the control (golden) answers. No I/O here.

- ``worker_quality``: each worker's balanced accuracy on control images; workers with
  enough control answers and a score below the floor are discounted.
- ``aggregate``: crowd-kit aggregation of the remaining answers (majority vote,
  skill-weighted vote, Dawid-Skene, ...) into a verdict, its confidence and its reason.

Rows are sorted canonically before any crowd-kit call, so a verdict never depends on the
order in which answers arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from crowdkit.aggregation import (
    GLAD,
    MACE,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    Wawa,
    ZeroBasedSkill,
)

from schemas.crowd import (
    FILTRATION_FLAGS,
    NO,
    NONE_FLAG,
    VALIDATION_REASONS,
    YES,
    CrowdSettings,
    FlagPolicy,
    Stage,
    Verdict,
)
from tasks.crowd.answers import answer_flags

Aggregator = Callable[[pd.DataFrame, "pd.Series[str]", "pd.Series[float]"], pd.DataFrame]


def _mv(data: pd.DataFrame, _gold: pd.Series, _skills: pd.Series) -> pd.DataFrame:
    return MajorityVote().fit_predict_proba(data)


def _wmv(data: pd.DataFrame, _gold: pd.Series, skills: pd.Series) -> pd.DataFrame:
    # a worker's weight is their control-task skill above chance: 2 * accuracy - 1
    weights = (2.0 * skills - 1.0).clip(lower=0.05)
    default = float(weights.median()) if len(weights) else 0.5
    return MajorityVote(default_skill=default, on_missing_skill="value").fit_predict_proba(
        data, skills=weights)


def _ds(data: pd.DataFrame, gold: pd.Series, _skills: pd.Series) -> pd.DataFrame:
    # the long task column is looked up in the short gold index (pandas iterates the values
    # looked for in Python: a million tasks took seconds the other way round)
    present = set(data.loc[data["task"].isin(gold.index), "task"])
    known = gold[gold.index.isin(present)]
    if known.empty or not set(known).issubset(set(data["label"])):
        return DawidSkene(n_iter=100).fit_predict_proba(data)
    return DawidSkene(n_iter=100).fit(data, true_labels=known).probas_


def _plain(cls: Callable[[], object]) -> Aggregator:
    def run(data: pd.DataFrame, _gold: pd.Series, _skills: pd.Series) -> pd.DataFrame:
        return cls().fit_predict_proba(data)  # type: ignore[attr-defined]
    return run


METHODS: dict[str, Aggregator] = {
    "mv": _mv,  # majority vote
    "wmv": _wmv,  # majority vote weighted by control-task skill
    "ds": _ds,  # Dawid-Skene, with the control answers as known labels
    "ocds": _plain(OneCoinDawidSkene),
    "glad": _plain(GLAD),
    "wawa": _plain(Wawa),  # worker agreement with aggregate
    "zbs": _plain(ZeroBasedSkill),
    "mace": _plain(MACE),
}


UNSUITED_FOR_RARE_LABELS = frozenset({"mace"})  # bench/RESULTS.md, crowd consensus


def label_probabilities(data: pd.DataFrame, *, method: str, golden: pd.Series | None = None,
                        skills: pd.Series | None = None,
                        rare_labels: bool = False) -> pd.DataFrame:
    """P(label) per task from ``method`` over a crowd-kit table (``task, worker, label``).

    The table is sorted before fitting, so row order never changes the result.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {sorted(METHODS)}")
    if method in UNSUITED_FOR_RARE_LABELS and rare_labels:
        raise ValueError(f"{method} is not usable on filtration's per-flag yes/no tables (it "
                         "calls every worker a spammer when flags are rare): use ds")
    if data.empty:
        return pd.DataFrame(dtype=float)
    data = data.sort_values(["task", "worker", "label"], kind="stable").reset_index(drop=True)
    gold = golden if golden is not None else pd.Series(dtype=str)
    sk = skills if skills is not None else pd.Series(dtype=float)
    labels = sorted(set(data["label"]))
    if len(labels) == 1:  # nothing to weigh: every answer agrees (EM methods divide by zero)
        return pd.DataFrame({labels[0]: 1.0}, index=sorted(set(data["task"])))
    with np.errstate(divide="ignore", invalid="ignore"):
        probas = METHODS[method](data, gold, sk).fillna(0.0)
    return probas.reindex(sorted(probas.columns), axis=1).sort_index()


# ---- worker quality -----------------------------------------------------------------------

def binary_units(stage: Stage, answers: pd.DataFrame) -> pd.DataFrame:
    """Answers as binary decisions: validation ``yes``; filtration one row per flag raised."""
    if stage is Stage.VALIDATION:
        return pd.DataFrame({"image_id": answers["image_id"], "worker_id": answers["worker_id"],
                             "unit": "valid", "value": answers["answer"] == YES})
    parts = [pd.DataFrame({"image_id": answers["image_id"], "worker_id": answers["worker_id"],
                           "unit": flag,
                           "value": answers["answer"].map(lambda a, f=flag: f in answer_flags(a))})
             for flag in FILTRATION_FLAGS]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def worker_quality(stage: Stage, answers: pd.DataFrame, golden: pd.Series, *,
                   settings: CrowdSettings) -> pd.DataFrame:
    """Per worker: answers, control answers, balanced accuracy on them, and discounted.

    Balanced accuracy is the mean of the recall on true positives and on true negatives of
    the binary decisions (valid or not; each flag raised or not), so a worker who always
    gives the same answer scores 0.5 however unbalanced the control set is.
    """
    cols = ["worker_id", "n_answers", "n_golden", "golden_accuracy", "golden_min_side",
            "discounted", "discount_reason"]
    if answers.empty:
        return pd.DataFrame(columns=cols).set_index("worker_id")
    counts = answers.groupby("worker_id").size().rename("n_answers")
    on_gold = answers[answers["image_id"].isin(golden.index)]
    n_gold = on_gold.groupby("worker_id").size().rename("n_golden")
    units = binary_units(stage, on_gold)
    truth = binary_units(stage, _golden_frame(golden))
    merged = units.merge(truth[["image_id", "unit", "value"]], on=["image_id", "unit"],
                         suffixes=("", "_true"))
    merged["correct"] = merged["value"] == merged["value_true"]
    recall = merged.groupby(["worker_id", "value_true"])["correct"].mean()
    acc = recall.groupby(level="worker_id").mean().rename("golden_accuracy")
    table = pd.concat([counts, n_gold, acc], axis=1)
    table["n_golden"] = table["n_golden"].fillna(0).astype(int)
    per_class = merged.groupby(["worker_id", "value_true"]).size().unstack(fill_value=0)
    both_sides = per_class.reindex(columns=[False, True], fill_value=0).min(axis=1)
    table["golden_min_side"] = both_sides.reindex(table.index).fillna(0).astype(int)
    table["discounted"] = (
        (table["n_golden"] >= settings.min_golden)
        & (table["golden_min_side"] >= settings.min_golden_per_class)
        & (table["golden_accuracy"] < settings.skill_floor))
    table["discount_reason"] = [
        discount_reason(n_golden=int(n), min_side=int(side), accuracy=acc, settings=settings)
        for n, side, acc in zip(table["n_golden"], table["golden_min_side"],
                                table["golden_accuracy"], strict=True)]
    table.index.name = "worker_id"
    return table.sort_index()


def discount_reason(*, n_golden: int, min_side: int, accuracy: float | None,
                    settings: CrowdSettings) -> str:
    """Why a worker is discounted or not, in a few words: a score on too few control
    answers (fewer than ``min_golden``, or fewer than ``min_golden_per_class`` on one side:
    right and wrong, flag and no flag) never discounts anyone, however low."""
    if n_golden < settings.min_golden:
        return f"too few controls: {n_golden} of {settings.min_golden}"
    if min_side < settings.min_golden_per_class:
        return f"too few on one side: {min_side} of {settings.min_golden_per_class}"
    if accuracy is None or pd.isna(accuracy):
        return "no control accuracy"
    if accuracy < settings.skill_floor:
        return f"accuracy below {settings.skill_floor:.2f}"
    return f"accuracy at least {settings.skill_floor:.2f}"


def discount_rule(settings: CrowdSettings) -> str:
    """The rule ``worker_quality`` discounts workers by, in words."""
    return (f"a worker is discounted (their answers left out) when their balanced accuracy "
            f"on control images is below {settings.skill_floor:.2f} over at least "
            f"{settings.min_golden} control answers, {settings.min_golden_per_class} of them "
            "on each side (right and wrong answers; flag and no flag); a score on fewer "
            "control answers discounts no one, however low")


def _golden_frame(golden: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"image_id": golden.index.astype(str), "worker_id": "",
                         "answer": golden.astype(str).values})


# ---- verdicts ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CrowdVerdict:
    """The crowd's decision for one image, before the queue decides whether it is final."""

    image_id: str
    verdict: Verdict
    reason: str | None
    confidence: float
    n_answers: int  # answers aggregated (discounted workers' answers left out)


def aggregate(stage: Stage, answers: pd.DataFrame, golden: pd.Series, quality: pd.DataFrame,
              *, settings: CrowdSettings, method: str | None = None) -> list[CrowdVerdict]:
    """One ``CrowdVerdict`` per image with at least one answer from a credible worker."""
    method = method or settings.method
    discounted = set(quality.index[quality["discounted"]]) if not quality.empty else set()
    usable = answers[~answers["worker_id"].isin(discounted)]
    if usable.empty:
        return []
    skills = quality["golden_accuracy"].dropna() if not quality.empty else pd.Series(dtype=float)
    if stage is Stage.VALIDATION:
        return _validation_verdicts(usable, golden, skills, method=method)
    return _filtration_verdicts(usable, golden, skills, method=method, settings=settings)


def _validation_verdicts(usable: pd.DataFrame, golden: pd.Series, skills: pd.Series, *,
                         method: str) -> list[CrowdVerdict]:
    data = pd.DataFrame({"task": usable["image_id"], "worker": usable["worker_id"],
                         "label": np.where(usable["answer"] == YES, YES, NO)})
    gold = golden.map(lambda a: YES if a == YES else NO)
    probas = label_probabilities(data, method=method, golden=gold, skills=skills)
    probas = probas.reindex(columns=[NO, YES], fill_value=0.0)
    sizes = usable.groupby("image_id").size().to_dict()
    reasons = _no_reasons(usable)
    out = []
    for image_id, p_yes in zip(probas.index, probas[YES].to_numpy(dtype=float), strict=True):
        yes = bool(p_yes > 0.5)  # a tie is not a yes
        out.append(CrowdVerdict(
            image_id=str(image_id), verdict=Verdict.ACCEPTED if yes else Verdict.REJECTED,
            reason=None if yes else reasons.get(str(image_id), "other"),
            confidence=float(p_yes) if yes else 1.0 - float(p_yes),
            n_answers=int(sizes[image_id])))
    return out


def _no_reasons(usable: pd.DataFrame) -> dict[str, str]:
    """The most given reason among the no answers of each image (ties: vocabulary order)."""
    nos = usable[usable["answer"].str.startswith(f"{NO}:")]
    counts = pd.DataFrame({"image_id": nos["image_id"].astype(str),
                           "reason": nos["answer"].str.slice(len(NO) + 1)}).value_counts()
    ranked = counts.rename("n").reset_index()
    rank = {r: i for i, r in enumerate(VALIDATION_REASONS)}
    ranked["rank"] = ranked["reason"].map(rank).fillna(len(rank))
    ranked = ranked.sort_values(["image_id", "n", "rank", "reason"],
                                ascending=[True, False, True, True], kind="stable")
    first = ranked.drop_duplicates("image_id")
    return dict(zip(first["image_id"], first["reason"], strict=True))


def _filtration_verdicts(usable: pd.DataFrame, golden: pd.Series, skills: pd.Series, *,
                         method: str, settings: CrowdSettings) -> list[CrowdVerdict]:
    units = binary_units(Stage.FILTRATION, usable)
    gold_units = binary_units(Stage.FILTRATION, _golden_frame(golden))
    p_flag: dict[str, pd.Series] = {}
    for flag in FILTRATION_FLAGS:
        part = units[units["unit"] == flag]
        data = pd.DataFrame({"task": part["image_id"], "worker": part["worker_id"],
                             "label": np.where(part["value"], "1", "0")})
        g = gold_units[gold_units["unit"] == flag]
        gold = pd.Series(np.where(g["value"], "1", "0"), index=g["image_id"].values)
        probas = label_probabilities(data, method=method, golden=gold, skills=skills,
                                     rare_labels=True)
        p_flag[flag] = probas.reindex(columns=["0", "1"], fill_value=0.0)["1"]
    p = pd.DataFrame(p_flag).fillna(0.0)
    votes = units[units["value"]].groupby(["image_id", "unit"]).size().to_dict()
    sizes = usable.groupby("image_id").size().to_dict()
    out = []
    for image_id, probs in zip(p.index, p[list(FILTRATION_FLAGS)].to_numpy(dtype=float),
                               strict=True):
        row = dict(zip(FILTRATION_FLAGS, map(float, probs), strict=True))
        flags = [f for f in FILTRATION_FLAGS if _credible(image_id, f, row[f], votes, settings)]
        if flags:
            out.append(CrowdVerdict(str(image_id), Verdict.EXCLUDED, ",".join(flags),
                                    max(row[f] for f in flags), int(sizes[image_id])))
        else:
            out.append(CrowdVerdict(str(image_id), Verdict.CLEAR, None,
                                    1.0 - max(row.values()), int(sizes[image_id])))
    return out


def _credible(image_id: object, flag: str, p: float, votes: Mapping[tuple[object, str], int],
              settings: CrowdSettings) -> bool:
    if settings.flag_policy is FlagPolicy.AGGREGATE:
        return p >= settings.flag_threshold
    return int(votes.get((image_id, flag), 0)) >= settings.min_flag_votes


def golden_verdict(stage: Stage, answer: str) -> tuple[Verdict, str | None]:
    """The verdict a known-correct (control or expert) answer stands for."""
    if stage is Stage.ANNOTATION:
        return Verdict.ANNOTATED, None  # the boxes themselves go to the boxes table
    if stage is Stage.VALIDATION:
        if answer == YES:
            return Verdict.ACCEPTED, None
        return Verdict.REJECTED, answer.split(":", 1)[1]
    if answer == NONE_FLAG:
        return Verdict.CLEAR, None
    return Verdict.EXCLUDED, answer
