"""The trainer on a tiny separable release: it learns, it repeats itself, it resumes where it
stopped, its weights round-trip, and it reads the crops view."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from schemas.train import BEST_WEIGHTS, CHECKPOINT, METRICS, MODEL_WEIGHTS, RUN_INFO, TrainSettings
from tasks.train.checkpoint import load_weights
from tasks.train.loop import WarmupSchedule
from tasks.train.model import build_model
from tasks.train.release import open_release
from tasks.train.run import RunDirError, finish_run, run_epoch, start_run
from tests.train.releases import CLASSES, make_release

torch.set_num_threads(1)

TINY = {"batch_size": 16, "input_size": 32, "device": "cpu", "workers": 0}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "releases" / "v1"
    return make_release(folder, splits={"train": 96, "val": 24, "test": 8}, seed=2, crops=True)


def train_run(release, run_dir, *, view="full", resume=False, stop_after=None, **settings):
    data = open_release(str(release), view=view)
    run = start_run(data, TrainSettings(**{**TINY, **settings}), run_dir=run_dir,
                    resume=resume)
    while run.epochs_done < min(run.settings.epochs, stop_after or run.settings.epochs):
        run_epoch(run)
    return run, finish_run(run)


def test_the_loss_falls_and_the_gestures_are_learned(release, tmp_path):
    run, summary = train_run(release, tmp_path / "run", epochs=5)
    losses = [e["loss"] for e in run.epochs]
    assert losses[-1] < 0.5 * losses[0]
    best = max(e["gesture_f1_macro"] for e in run.epochs)
    assert best >= 0.8  # chance: about 0.2 over the 5 classes present
    assert summary["eval_split"] == "val" and summary["view"] == "full"
    assert summary["gesture"]["samples"] == len(run.release.evaluation)
    assert run.best["gesture_f1_macro"] == best
    info = json.loads((tmp_path / "run" / RUN_INFO).read_text())
    assert [e["epoch"] for e in info["epochs"]] == [1, 2, 3, 4, 5]
    assert info["release"]["sha256sums_sha256"] == run.release.checksums_sha256
    assert set(info["software"]) >= {"torch", "python", "numpy", "pillow"}
    metrics = json.loads((tmp_path / "run" / METRICS).read_text())
    assert metrics["epoch"] == 5 and set(metrics["gesture"]["per_class"]) == set(CLASSES)
    assert (tmp_path / "run" / "confusion_gesture.png").read_bytes().startswith(b"\x89PNG")


def test_same_seed_same_metrics_and_a_resumed_run_goes_on_as_if_never_stopped(
        release, tmp_path):
    # a cosine decay and the augmentations: their draws and the schedule resume too
    extra = {"seed": 3, "lr_decay": "cosine", "shift": 0.1, "color_jitter": 0.2}
    straight, _ = train_run(release, tmp_path / "straight", epochs=2, **extra)
    first, _ = train_run(release, tmp_path / "stopped", epochs=2, stop_after=1, **extra)
    resumed, _ = train_run(release, tmp_path / "stopped", epochs=2, resume=True, **extra)
    keys = ("loss", "gesture_f1_macro", "leading_hand_f1_macro", "lr")
    assert [e[k] for k in keys for e in first.epochs] == \
        [straight.epochs[0][k] for k in keys]  # two runs, one seed: the same first epoch
    assert [[e[k] for k in keys] for e in resumed.epochs] == \
        [[e[k] for k in keys] for e in straight.epochs]
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_refuses_other_settings_and_a_fresh_run_refuses_a_used_folder(
        release, tmp_path):
    train_run(release, tmp_path / "run", epochs=1)
    with pytest.raises(RunDirError, match="input_size"):
        train_run(release, tmp_path / "run", epochs=2, input_size=48, resume=True)
    with pytest.raises(RunDirError, match="not empty"):
        train_run(release, tmp_path / "run", epochs=1)
    with pytest.raises(RunDirError, match="nothing to resume"):
        train_run(release, tmp_path / "other", epochs=1, resume=True)
    train_run(release, tmp_path / "cosine", epochs=2, stop_after=1, lr_decay="cosine")
    with pytest.raises(RunDirError, match="epochs"):  # the decay's length would change
        train_run(release, tmp_path / "cosine", epochs=3, lr_decay="cosine", resume=True)


def test_the_warm_up_is_linear_then_the_rate_stays_or_decays_to_zero():
    constant = WarmupSchedule(start=0.1, warmup=10, total=None)
    cosine = WarmupSchedule(start=0.1, warmup=10, total=110)
    assert [constant(i) for i in (0, 5, 10, 500)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    assert [cosine(i) for i in (0, 10, 60, 110, 200)] == pytest.approx([0.1, 1, 0.5, 0, 0])
    factors = [cosine(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


def test_weights_round_trip_through_safetensors(release, tmp_path):
    run, _ = train_run(release, tmp_path / "run", epochs=1)
    batch = next(iter(run.eval_loader))[0].permute(0, 3, 1, 2).float() / 255
    run.model.eval()
    loaded = build_model("small", num_classes=len(CLASSES)).eval()
    metadata = load_weights(loaded, tmp_path / "run" / MODEL_WEIGHTS)
    with torch.no_grad():
        for a, b in zip(run.model(batch), loaded(batch), strict=True):
            assert torch.equal(a, b)
    assert json.loads(metadata["classes"]) == list(CLASSES)
    assert metadata["input_size"] == "32" and metadata["epoch"] == "1"
    assert (tmp_path / "run" / BEST_WEIGHTS).is_file()


def test_the_crops_view_is_read_when_published(release, tmp_path):
    run, summary = train_run(release, tmp_path / "run", view="auto", epochs=2, workers=2)
    assert summary["view"] == "crops"
    assert all(shard.startswith("crops/shards/") for shard in run.release.train.shards)
    assert summary["gesture"]["samples"] == len(run.release.evaluation)
    assert run.epochs[-1]["loss"] < run.epochs[0]["loss"]
