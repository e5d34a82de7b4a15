"""Shared fixtures: one Prefect test harness per session, generated crowd batches, servers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest

from tests.servers import S3Endpoint, moto_s3_server

# The test files that start the Label Studio server: under xdist they share one worker, so
# only one server starts (its first start migrates for ~35 s). A file that uses the fixture
# and is missing here fails the collection (``pytest_collection_modifyitems``).
LABEL_STUDIO_FILES = frozenset({
    "tests/annotation_ui/test_labelstudio_client.py",
    "tests/annotation_ui/test_labelstudio_stage.py",
    "tests/annotation_ui/test_ls_pages.py",
})
LABEL_STUDIO_GROUP = "label-studio"


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its file, or ``LABEL_STUDIO_GROUP``."""
    module = nodeid.split("::")[0]
    return LABEL_STUDIO_GROUP if module in LABEL_STUDIO_FILES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under ``pytest -n 2 --dist loadgroup`` (scripts/test.sh) each test file runs whole on
    one worker, in file order, so its module fixtures are built once and its tests may
    build on each other; the Label Studio files share one worker.

    A scheduler of our own: xdist 3.8's ``xdist_group`` marks do nothing under pytest 9.2
    (xdist renames ``item._nodeid``, which pytest 9.2 no longer reads), so every test was
    its own work unit and a file's tests were spread over both workers.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return FileScheduling(config, log)  # type: ignore[arg-type]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test file that starts Label Studio but is not in ``LABEL_STUDIO_FILES``."""
    missing = sorted({item.nodeid.split("::")[0] for item in items
                      if "label_studio" in getattr(item, "fixturenames", ())}
                     - LABEL_STUDIO_FILES)
    if missing:
        raise pytest.UsageError(f"add {missing} to LABEL_STUDIO_FILES in tests/conftest.py")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for every flow run of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def crowd_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic crowd batch with every planted resubmission kind and problem."""
    from tasks.simulation.generator import generate_batch

    out = tmp_path_factory.mktemp("crowd") / "batch"
    generate_batch(out, n=60, seed=11, workers=2)
    return out


def read_truth(batch: Path) -> list[dict]:
    """The generator's ground truth, one dict per file or row."""
    return [json.loads(line) for line in (batch / "truth.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """A real S3-protocol server (moto) on 127.0.0.1."""
    with moto_s3_server() as endpoint:
        yield endpoint


from tests.servers import LabelStudioEndpoint, label_studio_server


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioEndpoint]:
    """A real Label Studio server on 127.0.0.1 (from ``.venv-ls``) with its own sqlite data.

    Files under ``label_studio.document_root`` can be served through a local import storage.
    """
    home = tmp_path_factory.mktemp("label-studio")
    document_root = tmp_path_factory.mktemp("label-studio-files")
    with label_studio_server(home, document_root=document_root) as endpoint:
        yield endpoint


CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup_browser.sh); never downloaded


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium (playwright ``Browser``) for screenshot tests of what people see.

    Pages open at 1600x1000 (``browser.new_page(viewport=...)`` to change it).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield chromium
        finally:
            chromium.close()
