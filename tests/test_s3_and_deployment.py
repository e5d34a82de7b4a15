"""The S3 path against a real S3-protocol server, and the served deployments (every flow)
run through a real Prefect server - both on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.deployments import FLOWS
from tasks.catalog import Catalog
from tasks.storage import LocalStorage, open_storage
from tests.catalogs import make_release_catalog
from tests.conftest import read_truth
from tests.servers import (
    S3Endpoint,
    isolated_prefect_env,
    log_tail,
    prefect_cli,
    prefect_server,
    served_deployments,
)
from tests.test_servers import _post_json, _wait_for_deployment

HAGRID = str(Path(sys.executable).with_name("hagrid"))


def _outcomes(root: Path) -> dict[str, tuple[str, str | None]]:
    rows = Catalog(LocalStorage(root)).read_table("submissions").to_pylist()
    return {r["file"]: (r["outcome"], r["reason"]) for r in rows}


def _upload(s3: S3Endpoint, batch: Path, bucket: str, prefix: str) -> None:
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted(batch.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(batch).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_ingest_from_s3_matches_the_truth(crowd_batch, s3_server, tmp_path, monkeypatch):
    from flows.ingest import ingest

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    _upload(s3_server, crowd_batch, "crowd", "drops/2026-11")
    root = tmp_path / "root"
    summary = ingest(source="s3://crowd/drops/2026-11",
                     submissions="s3://crowd/drops/2026-11/submissions.csv", root=str(root),
                     s3_endpoint_url=s3_server.endpoint_url)
    truth = read_truth(crowd_batch)
    got = _outcomes(root)
    assert summary["inputs"] == len(truth)
    assert got == {t["file"]: (t["expected_outcome"], t["expected_reason"]) for t in truth}


def test_a_ranged_read_on_s3_fails_as_the_local_one_does(s3_server, tmp_path, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3_server.client().create_bucket(Bucket="ranges")
    local = LocalStorage(tmp_path)
    remote = open_storage("s3://ranges/root", endpoint_url=s3_server.endpoint_url)
    for store in (local, remote):
        store.write_bytes("a/shard.tar", b"0123456789")
        assert store.read_range("a/shard.tar", 2, 3) == b"234"
        assert store.read_range("a/shard.tar", 4, 0) == b""
        with pytest.raises(EOFError):  # short: the end comes first
            store.read_range("a/shard.tar", 8, 5)
        with pytest.raises(EOFError):  # starts past the end (S3: 416 InvalidRange)
            store.read_range("a/shard.tar", 20, 5)
        with pytest.raises(FileNotFoundError):
            store.read_range("a/none.tar", 0, 5)


@pytest.mark.slow
def test_cli_exits_non_zero_for_an_unreachable_bucket(s3_server, tmp_path):
    env = dict(isolated_prefect_env(tmp_path), **s3_server.env())
    done = subprocess.run([HAGRID, "ingest", "s3://no-such-bucket/x", "--submissions",
                           "s3://no-such-bucket/x/s.csv", "--root", str(tmp_path / "root"),
                           "--s3-endpoint-url", s3_server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error:" in done.stderr and "no-such-bucket" in done.stderr


@dataclass(frozen=True)
class Served:
    """A real Prefect server with ``hagrid serve --name local`` serving every flow."""

    api_url: str
    env: dict[str, str]
    log: Path

    def run(self, deployment: str, cwd: Path, **params: object) -> None:
        """``prefect deployment run DEPLOYMENT -p k=v ... --watch``; fail unless it completes."""
        args = [a for k, v in params.items()
                for a in ("--param", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
        done = subprocess.run(
            [prefect_cli(), "deployment", "run", deployment, *args, "--watch",
             "--watch-timeout", "300"],
            env=self.env, cwd=cwd, capture_output=True, text=True, timeout=330, check=False)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log_tail(self.log)}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One Prefect server and one ``hagrid serve`` for the deployment tests of this module."""
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as api_url:
        env = isolated_prefect_env(home, api_url=api_url)
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
        log = home / "serve.log"
        with served_deployments([HAGRID, "serve", "--name", "local"], env=env, log=log) as serve:
            _wait_for_deployment(api_url, "pipeline/local", serve=serve, log=log)  # the last
            yield Served(api_url=api_url, env=env, log=log)


@pytest.mark.slow
def test_served_ingest_deployment_runs_on_a_real_prefect_server(served, crowd_batch,
                                                               tmp_path):
    root = tmp_path / "root"
    served.run("ingest/local", tmp_path, source=str(crowd_batch),
               submissions=str(crowd_batch / "submissions.csv"), root=str(root))
    truth = read_truth(crowd_batch)
    assert _outcomes(root) == {t["file"]: (t["expected_outcome"], t["expected_reason"])
                               for t in truth}
    [run] = [r for r in _post_json(f"{served.api_url}/flow_runs/filter", {})
             if r["parameters"].get("root") == str(root)]
    assert run["name"] == f"ingest {crowd_batch.name}"  # the UI's run list says what it did
    logs = _post_json(f"{served.api_url}/logs/filter",
                      {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    said = [log["message"] for log in logs]  # the run page shows its progress and summary
    assert any(m.startswith("window 1 of ") for m in said), said
    assert any(m.startswith("ingest done in ") for m in said), said


@pytest.mark.slow
def test_every_flow_is_served_and_publish_train_audit_run(served, tmp_path):
    deployments = _post_json(f"{served.api_url}/deployments/filter", {})
    flows = {f["id"]: f["name"] for f in _post_json(f"{served.api_url}/flows/filter", {})}
    assert sorted(f"{flows[d['flow_id']]}/{d['name']}" for d in deployments) == sorted(
        f"{flow}/local" for flow in FLOWS)
    root = tmp_path / "root"
    make_release_catalog(root, n=48, seed=9, users=16, links=2)
    served.run("publish/local", tmp_path, root=str(root), version="v1", fractions="60/40",
               crops=True, crop_size=32)
    release = root / "releases" / "v1"
    assert (release / "crops" / "manifests" / "train.parquet").is_file()
    served.run("train/local", tmp_path, release=str(release), out=str(tmp_path / "run"),
               epochs=1, batch_size=8, input_size=32, workers=0)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["view"] == "crops" and metrics["gesture"]["samples"] > 0
    served.run("audit/local", tmp_path, release=str(release), folds=2, epochs=1,
               input_size=32)
    audits = list((root / "audits").iterdir())
    assert len(audits) == 1 and audits[0].name.startswith("v1-audit-")
    with (audits[0] / "issues.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["release"] == "v1" and r["head"] in ("gesture", "leading_hand") for r in rows)
    written = Catalog(LocalStorage(root)).read_table("label_issues")
    assert sorted(written["image_id"].to_pylist()) == sorted(r["image_id"] for r in rows)
