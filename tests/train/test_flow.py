"""``hagrid train`` and the ``train`` flow: a release that fails its checks exits 2 before
anything is trained; a good one gives a complete run folder; a release made by the real
publish flow (crops view included) trains as is; an S3 release is read by ranged GETs."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import publish
from flows.train import train
from schemas.train import BEST_WEIGHTS, CHECKPOINT, METRICS, MODEL_WEIGHTS, RUN_INFO
from tasks.publish.writer import parquet_bytes
from tasks.train.release import ReleaseError, open_release
from tests.catalogs import make_release_catalog
from tests.prefect_api import flow_runs, run_log_lines, run_logs_at_info
from tests.train.releases import make_release, seal, write_file

pytestmark = pytest.mark.usefixtures("prefect_harness")
torch.set_num_threads(1)

TINY = ["--epochs", "1", "--batch-size", "16", "--input-size", "32", "--device", "cpu",
        "--workers", "0"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flow") / "releases" / "v1"
    return make_release(folder, splits={"train": 40, "test": 12}, seed=4)


@pytest.fixture
def copy(release, tmp_path):
    return shutil.copytree(release, tmp_path / "releases" / "v1")


def refused(release, out, *extra):
    result = CliRunner().invoke(app, ["train", "--release", str(release), "--out", str(out),
                                      *TINY, *extra])
    assert result.exit_code == 2, result.output
    assert not out.exists()  # nothing trained, no run folder
    return " ".join(result.output.split())


def test_a_tampered_checksum_list_is_refused(copy, tmp_path):
    sums = (copy / "SHA256SUMS").read_text()
    lines = [ln if "release.json" not in ln else "0" * 64 + "  release.json"
             for ln in sums.splitlines()]
    (copy / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert "release.json does not match its digest in SHA256SUMS" in refused(
        copy, tmp_path / "run")


def test_a_tampered_shard_is_refused_and_a_truncated_one_without_hashing(copy, tmp_path):
    shard = copy / "shards" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert "shard shards/train-000000.tar does not match its digest" in refused(
        copy, tmp_path / "run")
    shard.write_bytes(bytes(data[:len(data) // 2]))
    assert "shards/train-000000.tar is shorter than its members reach" in refused(
        copy, tmp_path / "run", "--no-verify-shards")


def test_a_missing_shard_is_refused_by_the_cli_and_the_flow(copy, tmp_path):
    (copy / "shards" / "test-000000.tar").unlink()
    assert "shard shards/test-000000.tar is missing" in refused(copy, tmp_path / "run")
    with pytest.raises(ReleaseError, match="shards/test-000000.tar is missing"):
        train(release=str(copy), out=str(tmp_path / "run"), epochs=1, device="cpu")
    assert not (tmp_path / "run").exists()


def test_a_manifest_of_another_schema_is_refused(copy, tmp_path):
    table = pq.read_table(copy / "manifests" / "train.parquet")
    write_file(copy, "manifests/train.parquet", parquet_bytes(table.drop_columns(["labels"])))
    seal(copy)  # checksums right: the schema is what is wrong
    message = refused(copy, tmp_path / "run")
    assert "manifests/train.parquet has another schema" in message
    assert "missing column labels" in message


def test_a_folder_that_is_not_a_release_is_refused(tmp_path):
    assert "not a release: no SHA256SUMS" in refused(tmp_path, tmp_path / "run")


def test_the_cli_trains_and_fills_the_run_folder(release, tmp_path):
    out = tmp_path / "run"
    with run_logs_at_info():  # as the UI shows the run
        result = CliRunner().invoke(app, ["train", "--release", str(release), "--out",
                                          str(out), *TINY, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["run_dir"] == str(out) and summary["eval_split"] == "test"
    for name in (MODEL_WEIGHTS, BEST_WEIGHTS, CHECKPOINT, RUN_INFO, METRICS,
                 "confusion_gesture.png", "confusion_leading_hand.png"):
        assert (out / name).is_file(), name
    info = json.loads((out / RUN_INFO).read_text())
    assert info["release"]["sha256sums_sha256"] == hashlib.sha256(
        (release / "SHA256SUMS").read_bytes()).hexdigest()
    assert info["release"]["version"] == "v1" and info["seed"] == 0
    assert info["epochs"][0]["images_per_s"] > 0 and info["epochs"][0]["train_seconds"] > 0
    [run] = [r for r in flow_runs("train") if r.parameters.get("out") == str(out)]
    assert run.name == "train v1"  # the UI names the run after the release it trains on
    lines = run_log_lines(run.id)
    [checked] = [ln for ln in lines if ln.startswith("release v1 checked in ")]
    data = info["release"]
    assert checked.endswith(f": train {data['train_images']} images ({data['train_hands']} "
                            f"hands), test {data['eval_hands']} hands, full view")
    [folder] = [ln for ln in lines if ln.startswith(f"run folder {out}: ")]
    assert folder.endswith(" batches of 16 per epoch on cpu")
    epoch = info["epochs"][0]
    assert (f"epoch 1: loss {epoch['loss']:.4f}, gesture F1 macro "
            f"{epoch['gesture_f1_macro']:.3f}, leading hand F1 macro "
            f"{epoch['leading_hand_f1_macro']:.3f}, ") in " | ".join(lines)


def test_the_default_run_folder_sits_beside_the_releases(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release, root / "releases" / "v2")
    summary = train(release=str(root / "releases" / "v2"), epochs=1, batch_size=16,
                    input_size=32, device="cpu", workers=0)
    run_dir = summary["run_dir"]
    assert run_dir.startswith(str(root / "runs" / "v1-"))  # release.json names it v1


def test_a_release_from_the_publish_flow_trains_from_either_view(tmp_path):
    root = tmp_path / "root"
    make_release_catalog(root, n=30, seed=7, users=12)
    publish(root=str(root), version="v1", shard_max_count=10, workers=1, crops=True,
            crop_size=64)
    release = str(root / "releases" / "v1")
    full, crops = open_release(release, view="full"), open_release(release, view="auto")
    assert crops.view == "crops"
    for a, b in ((full.train, crops.train), (full.evaluation, crops.evaluation)):
        assert np.array_equal(a.label, b.label) and np.array_equal(a.hand, b.hand)
    summary = train(release=release, out=str(tmp_path / "run"), epochs=1, batch_size=8,
                    input_size=32, device="cpu", workers=0)
    assert summary["view"] == "crops" and summary["gesture"]["samples"] == len(crops.evaluation)


@pytest.mark.slow
def test_a_release_on_s3_trains_with_a_worker_reading_by_ranged_gets(release, s3_server, monkeypatch, tmp_path):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    client = s3_server.client()
    client.create_bucket(Bucket="hagrid")
    for path in sorted(p for p in release.rglob("*") if p.is_file()):
        client.put_object(Bucket="hagrid", Key=f"root/releases/v1/{path.relative_to(release)}",
                          Body=path.read_bytes())
    summary = train(release="s3://hagrid/root/releases/v1", out=str(tmp_path / "run"),
                    epochs=1, batch_size=16, input_size=32, device="cpu", workers=1,
                    s3_endpoint_url=s3_server.endpoint_url)
    assert summary["release_uri"] == "s3://hagrid/root/releases/v1"
    assert summary["gesture"]["samples"] > 0
    shard = (release / "shards" / "train-000000.tar").read_bytes()
    client.put_object(Bucket="hagrid", Key="root/releases/v1/shards/train-000000.tar",
                      Body=shard[:len(shard) // 2])
    with pytest.raises(ReleaseError, match="shorter than its members reach"):
        train(release="s3://hagrid/root/releases/v1", out=str(tmp_path / "run2"),
              verify_shards=False, s3_endpoint_url=s3_server.endpoint_url)
    flipped = bytearray(shard)
    flipped[700] ^= 0xFF
    client.put_object(Bucket="hagrid", Key="root/releases/v1/shards/train-000000.tar",
                      Body=bytes(flipped))
    with pytest.raises(ReleaseError, match="does not match its digest"):
        train(release="s3://hagrid/root/releases/v1", out=str(tmp_path / "run2"),
              s3_endpoint_url=s3_server.endpoint_url)
