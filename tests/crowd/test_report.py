"""The stage report's worker table: words for headers, yes/no, two decimals, and why."""

from __future__ import annotations

import math

from tasks.crowd.report import report_markdown, worker_table

CROWD = [{"worker_id": "w1", "n_answers": 12, "n_golden": 4, "golden_accuracy": 0.0,
          "golden_min_side": 1, "discounted": False,
          "discount_reason": "too few on one side: 1 of 2"},
         {"worker_id": "w2", "n_answers": 9, "n_golden": 5, "golden_accuracy": 0.4,
          "golden_min_side": 2, "discounted": True, "discount_reason": "accuracy below 0.70"}]
ANNOTATORS = [{"worker_id": "a1", "n_images": 3, "n_boxes": 4, "n_hands": 4, "n_matched": 4,
               "mean_iou": 0.8765, "label_accuracy": 1.0, "leading_accuracy": 2 / 3,
               "missed_rate": 0.0, "extra_rate": math.nan}]


def test_crowd_workers_read_in_words_with_the_reason():
    headers, rows = worker_table(CROWD)
    assert headers == ["worker", "answers", "control answers", "control accuracy",
                       "discounted", "why"]
    assert rows == [["w1", "12", "4", "0.00", "no", "too few on one side: 1 of 2"],
                    ["w2", "9", "5", "0.40", "yes", "accuracy below 0.70"]]


def test_annotators_get_headers_in_words_and_a_dash_for_no_value():
    headers, rows = worker_table(ANNOTATORS)
    assert headers[0] == "worker" and "mean IoU" in headers and "extra boxes" in headers
    assert rows == [["a1", "3", "4", "4", "4", "0.88", "1.00", "0.67", "0.00", "-"]]
    assert worker_table([]) == ([], [])


def test_the_markdown_report_uses_the_same_table_and_states_the_rule():
    report = {"stage": "validation", "backend": "file", "method": "mv",
              "verdicts": {"accepted": 1}, "queue": {"decided": 1}, "answers_pulled": 2,
              "answers_rejected": {}, "pushed": 0, "workers": CROWD,
              "discount_rule": "a worker is discounted when ..."}
    text = report_markdown(report)
    assert "| worker | answers | control answers | control accuracy | discounted | why |" in text
    assert "| w1 | 12 | 4 | 0.00 | no | too few on one side: 1 of 2 |" in text
    assert "False" not in text and "True" not in text
    assert "a worker is discounted when" in text
