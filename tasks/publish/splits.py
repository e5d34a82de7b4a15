"""Split assignment: users are the unit, near-duplicate clusters stay whole, releases are sticky.

A *group* is a connected set of users: two users are joined when any near-duplicate link
connects one of their images to one of the other's (links across users merge them). A whole
group always lands in one split, so no user_id and no link straddles two splits.

Sticky releases: a group holding a user published earlier (``previous``) goes to that user's
split. A new link can join users published in different splits. A published user never
moves (that would leak an earlier test split into a later train split), so each keeps their
split and the link straddles; the group's new users go to the split holding most of its
previously published users' images (ties: the smallest split name). ``sticky_conflicts``
lists these groups so the release can report them.

New groups fill the targets with a deterministic greedy: largest group first (ties broken by
a seeded hash of the sorted user ids), each to the split whose per-class absolute deficit,
weighted by the group's class histogram, is largest (ties: the smallest split name). A split
with fraction 0 receives no new group, though sticky groups may keep it non-empty.
Everything is derived from sorted keys and counts, so row order never changes the result.

Source splits: images imported from a dataset that was already split (HaGRID's own
train/val/test) keep that split. ``source_user_splits`` turns them into a split per user,
which the caller passes to ``assign_splits`` like an earlier release's (``previous``), so a
user's images stay together and a link pulls the user's new group along. A user whose
images the source put in several splits goes to the most held-out of them (test, then val,
then train): an image a source held out for evaluation is never trained on. The images that
end outside their source split are listed by ``source_conflicts``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.92, "test": 0.08}
HELD_OUT_ORDER: tuple[str, ...] = ("test", "val", "train")  # most held out first


def user_groups(images: pd.DataFrame, *, links: Iterable[tuple[str, str]] = ()) -> pd.Series:
    """Group key (sorted user ids joined by a tab) of every user, indexed by user_id.

    Raises ValueError when a link names an image that is not in ``images``.
    """
    users = np.sort(images["user_id"].astype(str).unique())
    user_pos = pd.Series(np.arange(len(users)), index=users)
    user_of_image = images.set_index("image_id")["user_id"].astype(str)
    pairs = list(links)
    unknown = {i for pair in pairs for i in pair} - set(user_of_image.index)
    if unknown:
        raise ValueError(f"links name unknown image ids: {sorted(unknown)[:5]}")
    left = user_pos[user_of_image[[a for a, _ in pairs]]].to_numpy(dtype=np.int64)
    right = user_pos[user_of_image[[b for _, b in pairs]]].to_numpy(dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(pairs)), (left, right)), shape=(len(users), len(users))
    )
    _, component = connected_components(graph, directed=False)
    members = pd.Series(users).groupby(component).agg(lambda u: "\t".join(sorted(u)))
    return pd.Series(members[component].to_numpy(), index=users, name="group")


def sticky_conflicts(
    images: pd.DataFrame,
    *,
    links: Iterable[tuple[str, str]] = (),
    previous: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Groups whose previously published users sit in different splits, and where they go.

    Columns: ``group`` (sorted user ids joined by a tab), ``votes`` (split -> images of the
    group's previously published users), ``split`` (the split the group is given).
    """
    votes = _previous_votes(images, user_groups(images, links=links), previous or {})
    rows = [
        {"group": key, "votes": dict(v), "split": _majority(v)}
        for key, v in votes.items()
        if len(v) > 1
    ]
    return pd.DataFrame(rows, columns=["group", "votes", "split"])


def assign_splits(
    images: pd.DataFrame,
    *,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    links: Iterable[tuple[str, str]] = (),
    previous: Mapping[str, str] | None = None,
    seed: int = 0,
) -> pd.Series:
    """Split name of every image (index image_id, name ``split``), in sorted image_id order.

    ``images`` has columns image_id, user_id, gesture. ``previous`` maps user_id -> split of
    earlier releases; every such split must be one of ``fractions``.
    """
    _check_fractions(fractions, previous or {})
    groups = user_groups(images, links=links)
    table = images.assign(group=groups[images["user_id"].astype(str)].to_numpy())
    hist = pd.crosstab(table["group"], table["gesture"].astype(str))
    hist = hist.sort_index().sort_index(axis=1)
    votes = _previous_votes(images, groups, previous or {})
    split_of_group = {key: _majority(v) for key, v in votes.items()}
    names = sorted(fractions)
    counts = pd.DataFrame(0, index=names, columns=hist.columns, dtype=np.int64)
    for key, split in split_of_group.items():
        counts.loc[split] += hist.loc[key]
    new = [key for key in hist.index if key not in split_of_group]
    split_of_group.update(_fill_targets(hist.loc[new], counts, fractions, seed=seed))
    result = table.set_index("image_id")["group"].map(split_of_group).rename("split")
    if previous:  # a published user never moves, even when a new link joins two splits
        published = table.set_index("image_id")["user_id"].astype(str).map(dict(previous))
        result = published.astype(object).fillna(result.astype(object)).astype(str)
    return result.rename("split").sort_index()


def source_user_splits(images: pd.DataFrame, source: Mapping[str, str]) -> dict[str, str]:
    """user_id -> split of the users with images in ``source`` (image_id -> source split).

    A user with images in several source splits gets the most held-out one
    (``HELD_OUT_ORDER``). Raises ValueError for a split name outside ``HELD_OUT_ORDER``.
    """
    unknown = set(source.values()) - set(HELD_OUT_ORDER)
    if unknown:
        raise ValueError(f"unknown source splits {sorted(unknown)}; use {HELD_OUT_ORDER}")
    rank = {name: i for i, name in enumerate(HELD_OUT_ORDER)}
    frame = images[["image_id", "user_id"]].astype(str)
    frame = frame.assign(split=frame["image_id"].map(dict(source))).dropna(subset=["split"])
    best = frame.assign(rank=frame["split"].map(rank)).groupby("user_id")["rank"].min()
    return {str(user): HELD_OUT_ORDER[int(r)] for user, r in best.sort_index().items()}


def source_conflicts(images: pd.DataFrame, assignment: pd.Series,
                     source: Mapping[str, str]) -> pd.DataFrame:
    """Images whose split differs from their source split, sorted by image_id.

    Columns: ``image_id``, ``user_id``, ``source_split``, ``split``.
    """
    frame = images[["image_id", "user_id"]].astype(str).sort_values("image_id")
    frame = frame.assign(source_split=frame["image_id"].map(dict(source)),
                         split=frame["image_id"].map(assignment))
    moved = frame["source_split"].notna() & (frame["source_split"] != frame["split"])
    return frame[moved].reset_index(drop=True)


def split_report(
    images: pd.DataFrame, assignment: pd.Series, fractions: Mapping[str, float]
) -> pd.DataFrame:
    """Per-class image counts and fractions per split, and the class's max |fraction - target|.

    Index: gesture. Columns ``images_<split>``, ``fraction_<split>`` per split, then
    ``max_abs_deviation``; the release's figure is the max of that column.
    """
    split = assignment.reindex(images["image_id"]).to_numpy()
    counts = pd.crosstab(images["gesture"].astype(str).to_numpy(), split)
    counts = counts.reindex(columns=sorted(fractions), fill_value=0).sort_index()
    share = counts.div(counts.sum(axis=1), axis=0)
    target = pd.Series(fractions).reindex(share.columns)
    report = pd.concat([counts.add_prefix("images_"), share.add_prefix("fraction_")], axis=1)
    report["max_abs_deviation"] = (share - target).abs().max(axis=1)
    report.index.name = "gesture"
    return report


SPLIT_TOLERANCE = 0.05  # a split further than this from its target fraction is warned about
LISTED_CLASSES = 5  # classes named in a warning about classes a split lacks


def achieved_fractions(report: pd.DataFrame) -> dict[str, float]:
    """Share of the release's images in each split of a ``split_report`` (4 decimals)."""
    counts = {c.removeprefix("images_"): int(report[c].sum())
              for c in report.columns if c.startswith("images_")}
    total = sum(counts.values())
    return {s: round(n / total, 4) if total else 0.0 for s, n in counts.items()}


def split_warnings(report: pd.DataFrame, fractions: Mapping[str, float], *,
                   tolerance: float = SPLIT_TOLERANCE) -> list[str]:
    """What a release should say about its splits, from ``split_report``: a split more than
    ``tolerance`` from its target fraction (subjects are never divided between splits and
    keep the split of an earlier release, so a small or sticky release can land far off),
    and the classes missing from a split that should hold images."""
    achieved = achieved_fractions(report)
    warnings = []
    for split in sorted(fractions, key=lambda s: (-fractions[s], s)):
        images = report[f"images_{split}"]
        if abs(achieved[split] - fractions[split]) > tolerance:
            warnings.append(
                f"split {split} holds {achieved[split]:.0%} of the images ({int(images.sum())})"
                f", its target is {fractions[split]:.0%}: subjects are never divided between "
                "splits and keep the split of an earlier release")
        missing = images.index[images == 0].tolist()
        if fractions[split] > 0 and missing:
            more = len(missing) - LISTED_CLASSES
            warnings.append(
                f"split {split} has no images of {len(missing)} of {len(images)} classes: "
                f"{', '.join(map(str, missing[:LISTED_CLASSES]))}"
                + (f" and {more} more" if more > 0 else ""))
    return warnings


def _check_fractions(fractions: Mapping[str, float], previous: Mapping[str, str]) -> None:
    values = np.array(list(fractions.values()), dtype=float)
    if len(values) == 0 or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1: {dict(fractions)}")
    stray = set(previous.values()) - set(fractions)
    if stray:
        raise ValueError(f"previous splits missing from fractions: {sorted(stray)}")


def _previous_votes(
    images: pd.DataFrame, groups: pd.Series, previous: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Group key -> {split: images of its previously published users}, for sticky groups."""
    users = images["user_id"].astype(str)
    split = users.map(dict(previous))
    known = split.notna()
    tally = pd.crosstab(groups[users[known]].to_numpy(), split[known].to_numpy())
    return {
        str(key): {str(s): int(n) for s, n in row.items() if n > 0}
        for key, row in tally.iterrows()
    }


def _majority(votes: Mapping[str, int]) -> str:
    """The split with most votes; ties go to the smallest split name."""
    return min(votes, key=lambda s: (-votes[s], s))


def _fill_targets(
    hist: pd.DataFrame, counts: pd.DataFrame, fractions: Mapping[str, float], *, seed: int
) -> dict[str, str]:
    """Greedy: each new group (largest first) to the split with the largest absolute deficit."""
    names = [s for s in counts.index if fractions[s] > 0]
    rows = [counts.index.get_loc(s) for s in names]
    share = np.array([fractions[s] for s in names])[:, None]
    target = share * (counts.sum(axis=0).to_numpy() + hist.sum(axis=0).to_numpy())[None, :]
    current = counts.to_numpy()[rows].astype(float)
    order = sorted(hist.index, key=lambda k: (-int(hist.loc[k].sum()), _seeded_hash(k, seed)))
    values = hist.loc[order].to_numpy(dtype=float)
    chosen: dict[str, str] = {}
    for key, group_hist in zip(order, values):
        deficit = target - current  # absolute: a 92% split needs 11x the images of an 8% one
        best = int(np.argmax(deficit @ group_hist))
        current[best] += group_hist
        chosen[key] = names[best]
    return _fill_empty_splits(chosen, hist, counts, fractions)


def _fill_empty_splits(chosen: dict[str, str], hist: pd.DataFrame, counts: pd.DataFrame,
                       fractions: Mapping[str, float]) -> dict[str, str]:
    """Give a split with a positive fraction that got nothing the group nearest its target.

    On small releases every group holds a large share of its classes, and the per-class
    greedy can leave an 8% split empty; a group is then taken from a split that has more.
    """
    sizes = hist.sum(axis=1)
    total = int(sizes.sum() + counts.to_numpy().sum())
    for split in sorted(fractions):
        if fractions[split] <= 0 or counts.loc[split].sum() > 0 or split in chosen.values():
            continue
        donors = pd.Series(chosen).value_counts()
        movable = [k for k in chosen if donors[chosen[k]] > 1]
        if movable:
            target = fractions[split] * total
            key = min(movable, key=lambda k: (abs(int(sizes[k]) - target), k))
            chosen[key] = split
    return chosen


def _seeded_hash(key: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}\n{key}".encode(), digest_size=8).hexdigest()
