"""The ``pipeline`` flow's options. The flow itself runs end to end once per session in
``tests/test_simulated_pipeline.py`` (every stage, the crops view, a training epoch, a rerun
that adds and publishes nothing)."""

from __future__ import annotations

from flows.pipeline import crowd_cycles


def test_crowd_cycles_default_to_settling_a_simulated_crowd():
    assert crowd_cycles("simulated", None) == 20
    assert crowd_cycles("labelstudio", None) == 1
    assert crowd_cycles("file", 3) == 3
