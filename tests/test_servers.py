"""Integration checks of the loopback server helpers: moto S3 and a real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import (
    isolated_prefect_env,
    log_tail,
    moto_s3_server,
    open_direct,
    prefect_cli,
    prefect_server,
    served_deployments,
)

FLOW_SOURCE = """
from prefect import flow


@flow(name="servers-smoke")
def servers_smoke(x: int) -> int:
    return x + 1


if __name__ == "__main__":
    servers_smoke.serve(name="t")
"""


@pytest.mark.slow
def test_moto_s3_server_round_trip() -> None:
    with moto_s3_server() as s3:
        assert s3.endpoint_url.startswith("http://127.0.0.1:")
        client = s3.client()
        client.create_bucket(Bucket="gestures")
        client.put_object(Bucket="gestures", Key="raw/a.jpg", Body=b"\xff\xd8jpeg")
        client.put_object(Bucket="gestures", Key="raw/b.jpg", Body=b"\xff\xd8jpeg2")
        listed = client.list_objects_v2(Bucket="gestures", Prefix="raw/")
        assert [o["Key"] for o in listed["Contents"]] == ["raw/a.jpg", "raw/b.jpg"]
        body = client.get_object(Bucket="gestures", Key="raw/b.jpg")["Body"].read()
        assert body == b"\xff\xd8jpeg2"
    with moto_s3_server() as fresh:
        assert fresh.client().list_buckets()["Buckets"] == []


@pytest.mark.slow
def test_prefect_server_runs_a_served_deployment(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    flow_file = tmp_path / "smoke_flow.py"
    flow_file.write_text(FLOW_SOURCE)
    with prefect_server(home) as api_url:
        env = isolated_prefect_env(home, api_url=api_url)
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
        serve_log = tmp_path / "serve.log"
        with served_deployments([sys.executable, str(flow_file)], env=env, log=serve_log) as serve:
            _wait_for_deployment(api_url, "servers-smoke/t", serve=serve, log=serve_log)
            run = subprocess.run(
                [prefect_cli(), "deployment", "run", "servers-smoke/t"]
                + ["--param", "x=1", "--watch", "--watch-timeout", "60"],
                check=False,
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{log_tail(serve_log)}"
        flow_runs = _post_json(f"{api_url}/flow_runs/filter", {})
    assert [(r["state_type"], r["parameters"]) for r in flow_runs] == [("COMPLETED", {"x": 1})]


def _wait_for_deployment(
    api_url: str, name: str, *, serve: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll the API until the served deployment ``name`` exists."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"serve exited early:\n{log_tail(log)}"
        try:
            open_direct(f"{api_url}/deployments/name/{name}", timeout=5).close()
            return
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        time.sleep(0.5)
    raise TimeoutError(f"deployment {name} never appeared:\n{log_tail(log)}")


def _post_json(url: str, payload: dict[str, object]) -> list[dict[str, object]]:
    """POST a JSON body and decode the JSON list that comes back."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with open_direct(request, timeout=10) as response:
        result: list[dict[str, object]] = json.load(response)
    return result
