"""What a data engineer sees in the Prefect UI after an ingest run, in a real browser: the run's
name, its logs and its summary artifact (Debian's chromium through playwright, served UI on a
real Prefect server on 127.0.0.1). Screenshots go to tmp_path and to ``$HAGRID_SCREENSHOTS``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import isolated_prefect_env, open_direct, prefect_server

pytestmark = pytest.mark.slow

HAGRID = str(Path(sys.executable).with_name("hagrid"))


def _api(api_url: str, path: str, body: dict) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(f"{api_url}/{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with open_direct(request, timeout=10) as response:
        return list(json.load(response))


def _shoot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("HAGRID_SCREENSHOTS"):
        out = Path(os.environ["HAGRID_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)


def test_an_ingest_run_shows_its_name_logs_and_summary_in_the_ui(browser, crowd_batch, tmp_path):
    home = tmp_path / "prefect"
    with prefect_server(home, ui=True) as api_url:
        env = isolated_prefect_env(home, api_url=api_url)
        done = subprocess.run([HAGRID, "ingest", str(crowd_batch), "--submissions",
                               str(crowd_batch / "submissions.csv"), "--root",
                               str(tmp_path / "root")], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        runs = _api(api_url, "flow_runs/filter", {"flow_runs": {"state": {"type": {
            "any_": ["COMPLETED"]}}}})
        assert len(runs) == 1
        run = runs[0]
        logs = _api(api_url, "logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
        assert any("accepted" in entry["message"] for entry in logs)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        ui = api_url.removesuffix("/api")
        page.goto(f"{ui}/runs/flow-run/{run['id']}")
        try:
            page.get_by_text(run["name"]).filter(visible=True).first.wait_for(timeout=60_000)
            page.get_by_text("accepted").filter(visible=True).first.wait_for(timeout=60_000)  # a log line
        finally:
            _shoot(page, tmp_path, "prefect-ui-ingest-run")
        page.get_by_text("Artifacts", exact=True).filter(visible=True).first.click()
        try:
            page.get_by_text("ingest-summary").filter(visible=True).first.wait_for(timeout=30_000)
        finally:
            _shoot(page, tmp_path, "prefect-ui-ingest-artifacts")
        page.close()
