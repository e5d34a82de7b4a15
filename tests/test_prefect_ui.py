"""What a data engineer sees in the Prefect UI after ingest, publish and train runs, in a real
browser: each run's name, its progress lines in the logs and its summary artifact, whose tables
hold the numbers the run produced (Debian's chromium through playwright, served UI on a real
Prefect server on 127.0.0.1, shared by the file's tests). Screenshots go to tmp_path and to
``$HAGRID_SCREENSHOTS``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.catalogs import make_release_catalog
from tests.servers import isolated_prefect_env, open_direct, prefect_server

pytestmark = pytest.mark.slow

HAGRID = str(Path(sys.executable).with_name("hagrid"))
TALL = {"width": 1600, "height": 2000}  # the whole log of a publish or train run in one shot


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


@pytest.fixture(scope="module")
def served_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prefect server with its UI: its API URL and the environment of a ``hagrid`` command
    that runs against it."""
    home = tmp_path_factory.mktemp("prefect")
    with prefect_server(home, ui=True) as api_url:
        yield api_url, isolated_prefect_env(home, api_url=api_url)


def _hagrid(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([HAGRID, *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _completed_run(api_url: str, flow: str) -> dict[str, Any]:
    """The one completed run of ``flow`` on the server."""
    runs = _api(api_url, "flow_runs/filter", {
        "flows": {"name": {"any_": [flow]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    assert len(runs) == 1, runs
    return runs[0]


def _open_run(browser, api_url: str, run: dict[str, Any], *, log_line: str | re.Pattern[str],
              shots: Path, name: str, viewport: dict[str, int] | None = None) -> Any:
    """The run's page showing its name and a log line; then its Artifacts tab. Both
    screenshotted (``prefect-ui-<name>-run``, ``-artifacts``); returns the page."""
    page = browser.new_page(viewport=viewport or {"width": 1600, "height": 1000})
    page.goto(f"{api_url.removesuffix('/api')}/runs/flow-run/{run['id']}")
    try:
        page.get_by_text(run["name"]).filter(visible=True).first.wait_for(timeout=60_000)
        page.get_by_text(log_line).filter(visible=True).first.wait_for(timeout=60_000)
    finally:
        _shoot(page, shots, f"prefect-ui-{name}-run")
    page.get_by_text("Artifacts", exact=True).filter(visible=True).first.click()
    return page


def _open_artifact(page, key: str, *, shots: Path, name: str) -> list[list[str]]:
    """Open the artifact ``key`` from the run's Artifacts tab; its table rows as cell texts."""
    try:
        page.get_by_text(key, exact=True).filter(visible=True).first.wait_for(timeout=30_000)
    finally:
        _shoot(page, shots, f"prefect-ui-{name}-artifacts")
    page.get_by_text(key, exact=True).filter(visible=True).first.click()
    try:
        page.locator("table").first.wait_for(timeout=30_000)
    finally:
        _shoot(page, shots, f"prefect-ui-{name}-{key}")
    return [row.locator("th, td").all_inner_texts() for row in page.locator("tr").all()]


def test_an_ingest_run_shows_its_name_logs_and_summary_in_the_ui(browser, served_ui, crowd_batch,
                                                                 tmp_path):
    api_url, env = served_ui
    _hagrid(env, "ingest", str(crowd_batch), "--submissions",
            str(crowd_batch / "submissions.csv"), "--root", str(tmp_path / "root"))
    run = _completed_run(api_url, "ingest")
    logs = _api(api_url, "logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    assert any("accepted" in entry["message"] for entry in logs)
    page = _open_run(browser, api_url, run, log_line="accepted", shots=tmp_path, name="ingest")
    try:
        page.get_by_text("ingest-summary").filter(visible=True).first.wait_for(timeout=30_000)
    finally:
        _shoot(page, tmp_path, "prefect-ui-ingest-artifacts")
    page.close()


def _run_and_artifact(browser, api_url: str, flow: str, *, shots: Path,
                      log_line: re.Pattern[str], artifact: str) -> tuple[str, list[list[str]]]:
    """The last completed run of ``flow``: its name, after its page showed ``log_line``, and
    the rows of its ``artifact`` as the UI shows them (screenshots of both)."""
    run = _completed_run(api_url, flow)
    page = _open_run(browser, api_url, run, log_line=log_line, shots=shots, name=flow,
                     viewport=TALL)
    rows = _open_artifact(page, artifact, shots=shots, name=flow)
    page.close()
    return run["name"], rows


def test_publish_and_train_runs_show_their_progress_and_tables_in_the_ui(browser, served_ui,
                                                                         tmp_path):
    api_url, env = served_ui
    root = tmp_path / "root"
    make_release_catalog(root, n=60, seed=7, users=16)
    _hagrid(env, "publish", "--root", str(root), "--version", "v1", "--fractions", "70/30",
            "--shard-max-count", "10", "--crops", "--crop-size", "64", "--workers", "1")
    release = root / "releases" / "v1"
    name, rows = _run_and_artifact(browser, api_url, "publish", shots=tmp_path,
                                   log_line=re.compile(r"^shards train: \d+ \("),
                                   artifact="release-summary")
    assert name == "publish v1"
    for split in ("train", "test"):
        manifest = pq.read_table(release / "manifests" / f"{split}.parquet").to_pandas()
        assert [split, str(len(manifest)), str(manifest["user_id"].nunique())] in rows

    _hagrid(env, "train", "--release", str(release), "--out", str(tmp_path / "run"),
            "--epochs", "1", "--batch-size", "8", "--input-size", "32", "--device", "cpu",
            "--workers", "0")
    name, rows = _run_and_artifact(browser, api_url, "train", shots=tmp_path,
                                   log_line=re.compile(r"^epoch 1: loss "),
                                   artifact="train-metrics")
    assert name == "train v1"
    epoch = json.loads((tmp_path / "run" / "run.json").read_text())["epochs"][0]
    assert ["1", f"{epoch['loss']:.4f}", f"{epoch['gesture_f1_macro']:.3f}",
            f"{epoch['leading_hand_f1_macro']:.3f}", f"{epoch['images_per_s']:.1f}"] in rows
