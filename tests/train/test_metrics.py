"""Metrics per head: hand-checked on a toy set, equal to scikit-learn's, a stable PNG."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tasks.train.metrics import (
    confusion_figure_png,
    head_metrics,
    metrics_markdown,
    score_heads,
)

CLASSES = ("a", "b", "c", "d")  # d never occurs: macro averages leave it out


def test_a_toy_set_gives_the_hand_computed_figures():
    targets = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    m = head_metrics(targets, predictions, classes=CLASSES)
    # a: tp 2 fp 0 fn 1 -> f1 4/5; b: tp 1 fp 1 fn 1 -> 1/2; c: tp 1 fp 1 fn 0 -> 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * 4 / 5 + 2 * 1 / 2 + 1 * 2 / 3) / 6)
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3),
                                   "f1": pytest.approx(0.8), "support": 3}
    assert m["per_class"]["d"] == {"precision": None, "recall": None, "f1": None,
                                   "support": 0}
    assert m["confusion"][0] == [2, 1, 0, 0] and m["samples"] == 6


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_figures_equal_scikit_learns(pairs):
    targets, predictions = (np.array(x) for x in zip(*pairs, strict=True))
    m = head_metrics(targets, predictions, classes=CLASSES)
    assert m["accuracy"] == pytest.approx(accuracy_score(targets, predictions))
    assert m["f1_macro"] == pytest.approx(f1_score(targets, predictions, average="macro"))
    assert m["f1_weighted"] == pytest.approx(
        f1_score(targets, predictions, average="weighted", zero_division=0))
    for k, name in enumerate(CLASSES):
        row = m["per_class"][name]
        if row["precision"] is not None:
            assert row["precision"] == pytest.approx(precision_score(
                targets, predictions, labels=[k], average="macro", zero_division=0))
        if row["recall"] is not None:
            assert row["recall"] == pytest.approx(recall_score(
                targets, predictions, labels=[k], average="macro", zero_division=0))


def test_the_leading_hand_is_scored_on_gesture_hands_with_a_known_hand_only():
    heads = score_heads(label=np.array([0, 3, 1, 2]), hand=np.array([0, 1, -1, 1]),
                        gesture_hand=np.array([True, False, True, True]),
                        gesture_pred=np.array([0, 3, 1, 0]), hand_pred=np.array([0, 0, 0, 0]),
                        classes=CLASSES, hands=("right", "left"))
    assert heads["gesture"]["samples"] == 4
    assert heads["leading_hand"]["samples"] == 2  # the free hand and the unknown one left out
    assert heads["leading_hand"]["accuracy"] == pytest.approx(0.5)


def test_the_confusion_png_is_the_same_bytes_for_the_same_matrix():
    m = head_metrics(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), classes=CLASSES)
    first = confusion_figure_png(m["confusion"], classes=CLASSES, title="gesture")
    assert first.startswith(b"\x89PNG")
    assert confusion_figure_png(m["confusion"], classes=CLASSES, title="gesture") == first


def test_the_markdown_tables_escape_class_names():
    m = head_metrics(np.array([0, 1]), np.array([0, 1]), classes=("a|b", "<c>"))
    text = metrics_markdown(m, head="gesture")
    assert "a\\|b" in text and "&lt;c&gt;" in text and "<c>" not in text
