"""Split assignment: user disjointness, whole link clusters, per-class targets, sticky releases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.release import PublishSettings, parse_fractions
from tasks.publish.splits import (
    achieved_fractions,
    assign_splits,
    source_conflicts,
    source_user_splits,
    split_report,
    split_warnings,
    sticky_conflicts,
    user_groups,
)

V1 = {"train": 0.92, "test": 0.08}
V2 = {"train": 0.76, "val": 0.09, "test": 0.15}


def synthetic_images(
    *, users: int, classes: int = 18, seed: int = 0, first_user: int = 0
) -> pd.DataFrame:
    """Users with 1-20 images each, gestures drawn uniformly from ``classes``."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(first_user, first_user + users):
        for i in range(int(rng.integers(1, 21))):
            rows.append((f"u{u:04d}_{i:02d}", f"u{u:04d}", f"g{rng.integers(classes):02d}"))
    return pd.DataFrame(rows, columns=["image_id", "user_id", "gesture"])


def random_links(images: pd.DataFrame, *, count: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    ids = images["image_id"].to_numpy()
    return [(str(a), str(b)) for a, b in rng.choice(ids, size=(count, 2))]


def users_per_split(images: pd.DataFrame, assignment: pd.Series) -> pd.Series:
    split = assignment.reindex(images["image_id"]).to_numpy()
    return pd.Series(split, index=images["user_id"].to_numpy()).groupby(level=0).nunique()


@pytest.fixture(scope="module")
def release1() -> pd.DataFrame:
    return synthetic_images(users=400, seed=1)


@pytest.mark.parametrize("fractions", [V1, V2])
def test_targets_met_per_class_with_users_and_links_whole(
    release1: pd.DataFrame, fractions: dict[str, float]
) -> None:
    links = random_links(release1, count=40, seed=2)
    assignment = assign_splits(release1, fractions=fractions, links=links)
    assert assignment.index.is_unique
    assert set(assignment.index) == set(release1["image_id"])
    assert (users_per_split(release1, assignment) == 1).all()
    assert all(assignment[a] == assignment[b] for a, b in links)
    report = split_report(release1, assignment, fractions)
    assert len(report) == 18
    assert report["max_abs_deviation"].max() < 0.02


def test_link_across_users_merges_them() -> None:
    images = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "b1", "c1"],
            "user_id": ["a", "a", "b", "c"],
            "gesture": ["like", "palm", "like", "palm"],
        }
    )
    groups = user_groups(images, links=[("a2", "b1")])
    assert groups["a"] == groups["b"] == "a\tb"
    assert groups["c"] == "c"
    with pytest.raises(ValueError, match="unknown image ids"):
        user_groups(images, links=[("a1", "zz")])


def test_zero_fraction_split_gets_nothing(release1: pd.DataFrame) -> None:
    fractions = {"train": 0.9, "val": 0.0, "test": 0.1}
    assignment = assign_splits(release1, fractions=fractions)
    assert set(assignment) == {"train", "test"}
    assert split_report(release1, assignment, fractions)["images_val"].eq(0).all()


def test_bad_fractions_rejected(release1: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(release1, fractions={"train": 0.9, "test": 0.2})
    with pytest.raises(ValueError, match="missing from fractions"):
        assign_splits(release1, fractions=V1, previous={"u0000": "val"})


def test_second_release_keeps_old_users_and_new_users_fill_targets(
    release1: pd.DataFrame,
) -> None:
    first = assign_splits(release1, fractions=V1, seed=3)
    previous = dict(zip(release1["user_id"], first.reindex(release1["image_id"])))
    more = synthetic_images(users=400, seed=4, first_user=400)
    # Release 2 also brings new images from some old users.
    extra_old = synthetic_images(users=50, seed=5).assign(
        image_id=lambda t: "r2_" + t["image_id"]
    )
    release2 = pd.concat([release1, more, extra_old], ignore_index=True)
    second = assign_splits(release2, fractions=V1, previous=previous, seed=3)
    old = release2["user_id"].isin(set(previous))
    kept = second.reindex(release2.loc[old, "image_id"]).to_numpy()
    assert (kept == release2.loc[old, "user_id"].map(previous).to_numpy()).all()
    assert (users_per_split(release2, second) == 1).all()
    report = split_report(release2, second, V1)
    assert report["max_abs_deviation"].max() < 0.02


def test_link_joining_users_of_two_previous_splits_keeps_each_published_user() -> None:
    images = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "b1", "c1", "d1", "n1"],
            "user_id": ["a", "a", "b", "c", "d", "n"],
            "gesture": ["like", "like", "like", "palm", "palm", "palm"],
        }
    )
    previous = {"a": "test", "b": "train", "c": "train", "d": "test"}
    links = [("a1", "b1"), ("c1", "d1"), ("n1", "a2")]
    assignment = assign_splits(images, fractions=V1, links=links, previous=previous)
    assert assignment[["a1", "a2"]].eq("test").all() and assignment["b1"] == "train"
    assert assignment["c1"] == "train" and assignment["d1"] == "test"
    assert assignment["n1"] == "test"  # a new user joins the majority (a: 2 images, b: 1)
    conflicts = sticky_conflicts(images, links=links, previous=previous)
    assert conflicts.to_dict("records") == [
        {"group": "a\tb\tn", "votes": {"test": 2, "train": 1}, "split": "test"},
        {"group": "c\td", "votes": {"test": 1, "train": 1}, "split": "test"},
    ]
    assert sticky_conflicts(images, previous=previous).empty


@st.composite
def small_releases(draw: st.DrawFn) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    seed = draw(st.integers(0, 2**16))
    images = synthetic_images(users=draw(st.integers(1, 30)), classes=4, seed=seed)
    links = random_links(images, count=draw(st.integers(0, 5)), seed=seed)
    return images, links, draw(st.integers(0, 2**31))


@settings(max_examples=40, deadline=None)
@given(release=small_releases(), shuffle_seed=st.integers(0, 2**16))
def test_same_input_in_any_row_order_gives_same_splits(
    release: tuple[pd.DataFrame, list[tuple[str, str]], int], shuffle_seed: int
) -> None:
    images, links, seed = release
    shuffled = images.sample(frac=1.0, random_state=shuffle_seed)
    swapped = [(b, a) for a, b in reversed(links)]
    first = assign_splits(images, fractions=V2, links=links, seed=seed)
    again = assign_splits(shuffled, fractions=V2, links=swapped, seed=seed)
    pd.testing.assert_series_equal(first, again)
    assert (users_per_split(images, first) == 1).all()


def test_a_small_release_still_fills_every_split_with_a_positive_fraction() -> None:
    images = pd.DataFrame({
        "image_id": [f"i{n:02d}" for n in range(45)],
        "user_id": [f"u{n % 9}" for n in range(45)],
        "gesture": [f"g{n % 3}" for n in range(45)],
    })
    assignment = assign_splits(images, fractions=V1)
    assert set(assignment) == {"train", "test"}
    assert (assignment == "test").sum() == 5  # one user of 5 images, nearest to 8% of 45


def test_default_fractions_follow_the_taxonomy_and_an_explicit_value_wins() -> None:
    assert dict(PublishSettings().fractions) == V1
    assert dict(PublishSettings(taxonomy="hagrid_v1").fractions) == V1
    assert dict(PublishSettings(taxonomy="hagrid_v2").fractions) == V2
    assert PublishSettings(taxonomy="hagrid_v2").as_dict()["fractions"] == {
        "test": 0.15, "train": 0.76, "val": 0.09}
    explicit = PublishSettings(taxonomy="hagrid_v2", fractions=parse_fractions("92/8"))
    assert dict(explicit.fractions) == V1
    assert PublishSettings().as_dict()["class_order"] == "hagrid"
    with pytest.raises(ValueError, match="class order"):
        PublishSettings(class_order="random")


SOURCED = pd.DataFrame({
    "image_id": ["a1", "a2", "b1", "b2", "b3", "c1", "c2", "n1", "n2"],
    "user_id": ["a", "a", "b", "b", "b", "c", "c", "n", "n"],
    "gesture": ["like", "palm", "like", "like", "palm", "palm", "like", "like", "palm"],
})


def test_source_splits_pin_users_and_a_mixed_user_goes_to_the_most_held_out() -> None:
    source = {"a1": "val", "a2": "val", "b1": "train", "b2": "test", "b3": "train",
              "c1": "train"}  # b is mixed: test wins; c2 has no source split
    pinned = source_user_splits(SOURCED, source)
    assert pinned == {"a": "val", "b": "test", "c": "train"}
    assignment = assign_splits(SOURCED, fractions=V1 | {"val": 0.0}, previous=pinned,
                               links=[("n1", "a1")])
    assert assignment[["a1", "a2", "n1", "n2"]].eq("val").all()  # n is linked to a
    assert assignment[["b1", "b2", "b3"]].eq("test").all()
    assert assignment[["c1", "c2"]].eq("train").all()
    assert (users_per_split(SOURCED, assignment) == 1).all()
    moved = source_conflicts(SOURCED, assignment, source)
    assert moved.to_dict("records") == [
        {"image_id": "b1", "user_id": "b", "source_split": "train", "split": "test"},
        {"image_id": "b3", "user_id": "b", "source_split": "train", "split": "test"}]
    with pytest.raises(ValueError, match="unknown source splits"):
        source_user_splits(SOURCED, {"a1": "subsample"})


@pytest.mark.parametrize("text, expected", [
    ("92/8", V1), ("76/9/15", V2), ("train=0.76,val=0.09,test=0.15", V2),
    ("train=76,test=24", {"train": 0.76, "test": 0.24})])
def test_fractions_add_up_to_100_or_to_1(text: str, expected: dict[str, float]) -> None:
    assert parse_fractions(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["50/60", "10/10", "train=0.5,test=0.6", "-8/108", "1/2/3/4"])
def test_fractions_that_add_up_to_neither_are_refused_not_rescaled(text: str) -> None:
    with pytest.raises(ValueError, match="add up to 100|negative|2 or 3 fractions"):
        parse_fractions(text)


def test_a_sticky_release_far_from_its_targets_is_warned_about(release1: pd.DataFrame) -> None:
    first = assign_splits(release1, fractions=V1, seed=3)
    previous = dict(zip(release1["user_id"], first.reindex(release1["image_id"]), strict=True))
    halves = {"train": 0.5, "test": 0.5}  # every user published: nobody can move
    second = assign_splits(release1, fractions=halves, previous=previous, seed=3)
    report = split_report(release1, second, halves)
    achieved = achieved_fractions(report)
    assert achieved == {"test": pytest.approx((second == "test").mean(), abs=1e-4),
                        "train": pytest.approx((second == "train").mean(), abs=1e-4)}
    assert achieved["train"] > 0.85
    warned = split_warnings(report, halves)
    assert any(w.startswith("split train holds 9") and "its target is 50%" in w
               for w in warned), warned
    assert any(w.startswith("split test holds ") for w in warned), warned
    assert split_warnings(split_report(release1, first, V1), V1) == []


def test_a_class_missing_from_a_split_is_warned_about() -> None:
    images = pd.DataFrame({"image_id": ["a1", "a2", "b1", "c1"], "user_id": ["a", "a", "b", "c"],
                           "gesture": ["like", "palm", "like", "like"]})
    assignment = pd.Series({"a1": "train", "a2": "train", "b1": "test", "c1": "train"})
    fractions = {"train": 0.75, "test": 0.25}
    assert split_warnings(split_report(images, assignment, fractions), fractions) == [
        "split test has no images of 1 of 2 classes: palm"]
