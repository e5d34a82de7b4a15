"""Folds grouped by person: every image of a user in one fold, folds of about equal size.

A model scored on a fold never saw the people in it, so it cannot have learnt a person's
mislabelled pictures by heart (HaGRID splits by ``user_id`` for the same reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Folds:
    """A fold index per image, and how many folds were asked for and made."""

    fold: np.ndarray  # int64 per image: 0..k-1
    k: int  # folds made: the request, lowered to the number of users when fewer
    requested: int

    @property
    def lowered(self) -> bool:
        """True when there were fewer users than folds asked for."""
        return self.k < self.requested

    def sizes(self) -> list[int]:
        """Images per fold."""
        return np.bincount(self.fold, minlength=self.k).astype(int).tolist()


def user_folds(user_ids: Sequence[str] | np.ndarray, *, k: int = 5, seed: int = 0) -> Folds:
    """Assign each image to one of ``k`` folds so that all images of a user share a fold and
    the folds hold about as many images each: users in a seed-permuted order, stably sorted
    by image count (largest first), each into the currently lightest fold (the lowest index
    on a tie). ``k`` is lowered to the number of users when there are fewer."""
    if k < 2:
        raise ValueError(f"an audit needs at least 2 folds, got {k}")
    users, image_user, counts = np.unique(np.asarray(user_ids, dtype=object).astype(str),
                                          return_inverse=True, return_counts=True)
    made = min(k, len(users))
    order = np.random.default_rng(seed).permutation(len(users))
    order = order[np.argsort(-counts[order], kind="stable")]
    load = np.zeros(max(made, 1), dtype=np.int64)
    user_fold = np.zeros(len(users), dtype=np.int64)
    for user in order:
        lightest = int(np.argmin(load))
        user_fold[user] = lightest
        load[lightest] += counts[user]
    return Folds(fold=user_fold[image_user].astype(np.int64), k=made, requested=k)
