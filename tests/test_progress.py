"""The progress hook: a flow's own listener hears a block's reports beside the CLI's, and a
throttled listener passes on at most one report per interval, never a finished stage."""

from __future__ import annotations

from tasks import progress


def test_a_listener_of_the_block_hears_reports_beside_the_installed_one() -> None:
    cli: list[tuple[str, int, int]] = []
    flow: list[tuple[str, int, int]] = []
    progress.set_listener(lambda *r: cli.append(r))
    try:
        with progress.listening(lambda *r: flow.append(r)):
            progress.report("epoch 1/2 train", 1, 4)
        progress.report("epoch 2/2 train", 1, 4)
    finally:
        progress.set_listener(None)
    assert cli == [("epoch 1/2 train", 1, 4), ("epoch 2/2 train", 1, 4)]
    assert flow == [("epoch 1/2 train", 1, 4)]  # the block's listener is gone after it


def test_a_block_listener_works_without_an_installed_one() -> None:
    heard: list[tuple[str, int, int]] = []
    with progress.listening(lambda *r: heard.append(r)):
        progress.report("eval", 2, 3)
    progress.report("eval", 3, 3)
    assert heard == [("eval", 2, 3)]


def test_at_most_one_report_per_interval_and_never_a_finished_stage() -> None:
    now = [0.0]
    told: list[tuple[str, int, int]] = []
    listener = progress.at_most_every(60.0, lambda *r: told.append(r), clock=lambda: now[0])
    for t, done in ((0.0, 1), (30.0, 2), (59.9, 3), (60.0, 4), (100.0, 5), (125.0, 6),
                    (300.0, 10)):
        now[0] = t
        listener("epoch 1/1 train", done, 10)
    assert told == [("epoch 1/1 train", 4, 10), ("epoch 1/1 train", 6, 10)]
