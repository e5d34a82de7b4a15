"""The S3 path against a real S3-protocol server, and the served ``ingest`` deployment run
through a real Prefect server - both on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.catalog import Catalog
from tasks.storage import LocalStorage
from tests.conftest import read_truth
from tests.servers import (
    S3Endpoint,
    isolated_prefect_env,
    log_tail,
    prefect_cli,
    prefect_server,
    served_deployments,
)
from tests.test_servers import _wait_for_deployment

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


@pytest.mark.slow
def test_cli_exits_non_zero_for_an_unreachable_bucket(s3_server, tmp_path):
    env = dict(isolated_prefect_env(tmp_path), **s3_server.env())
    done = subprocess.run([HAGRID, "ingest", "s3://no-such-bucket/x", "--submissions",
                           "s3://no-such-bucket/x/s.csv", "--root", str(tmp_path / "root"),
                           "--s3-endpoint-url", s3_server.endpoint_url],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error:" in done.stderr and "no-such-bucket" in done.stderr


@pytest.mark.slow
def test_served_ingest_deployment_runs_on_a_real_prefect_server(crowd_batch, tmp_path):
    home, root = tmp_path / "prefect-home", tmp_path / "root"
    with prefect_server(home) as api_url:
        env = isolated_prefect_env(home, api_url=api_url)
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
        log = tmp_path / "serve.log"
        with served_deployments([HAGRID, "serve", "--name", "local"], env=env, log=log) as serve:
            _wait_for_deployment(api_url, "ingest/local", serve=serve, log=log)
            run = subprocess.run(
                [prefect_cli(), "deployment", "run", "ingest/local",
                 "--param", f"source={crowd_batch}",
                 "--param", f"submissions={crowd_batch / 'submissions.csv'}",
                 "--param", f"root={root}", "--watch", "--watch-timeout", "300"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=330, check=False)
            assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{log_tail(log)}"
    truth = read_truth(crowd_batch)
    assert _outcomes(root) == {t["file"]: (t["expected_outcome"], t["expected_reason"])
                               for t in truth}
