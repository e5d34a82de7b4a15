"""What people see: a release's report, contracts page and Data Docs in a browser, offline.

Every page is opened from ``file://`` with anything else aborted, as on a machine without a
network years from now. Screenshots go to ``tmp_path`` and, when ``HAGRID_SCREENSHOTS`` names
a folder, there too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import pytest

from data_contracts.page import render_page
from data_contracts.runner import run_contracts
from flows.publish import publish
from tests.catalogs import make_release_catalog
from tests.data_contracts.test_data_contracts import TAXONOMY, valid_frames, zero_width_box

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small published release."""
    root = tmp_path_factory.mktemp("pages") / "root"
    make_release_catalog(root, n=120, seed=21, users=20, links=3)
    publish(root=str(root), version="v1", fractions="80/20")
    return root / "releases" / "v1"


class OfflinePage:
    """A browser page that loads ``file://`` URLs only and records what it refused."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.blocked: list[str] = []
        self.page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def open(self, path: Path) -> Any:
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        return self.page


@pytest.fixture
def offline(browser: Any) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    try:
        yield page
    finally:
        page.page.close()


def shoot(page: Any, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot in ``tmp_path`` (and in ``$HAGRID_SCREENSHOTS`` if set)."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    folder = os.environ.get("HAGRID_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / name)
    assert shot.stat().st_size > 10_000
    return shot


def local_target(page_url: str, href: str) -> Path:
    """The file a relative link of a ``file://`` page points at (fragment dropped)."""
    url = urlparse(urljoin(page_url, href))
    assert url.scheme == "file", href
    return Path(unquote(url.path))


def test_contracts_page_shows_every_expectation_offline(release: Path, offline: OfflinePage,
                                                        tmp_path: Path) -> None:
    page = offline.open(release / "report" / "contracts.html")
    shoot(page, "contracts.png", tmp_path)
    assert offline.blocked == []  # self-contained: nothing to fetch
    results = json.loads((release / "report" / "contracts.json").read_text())["results"]
    rows = page.locator("table.results tr.pass, table.results tr.fail")
    assert rows.count() == len(results) > 50
    status = page.locator("table.results td.status").all_inner_texts()
    assert status == ["pass"] * len(results)
    assert page.locator("p.verdict").inner_text().startswith("PASSED")
    colour = page.locator("table.results td.status").first.evaluate(
        "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(218, 251, 225)"  # green, styled without any network
    assert "2000-01-01" in page.locator("p.note").inner_text()


def test_a_failed_expectation_shows_as_failed_with_its_values(offline: OfflinePage,
                                                              tmp_path: Path) -> None:
    frames = valid_frames()
    zero_width_box(frames)
    bad_id = frames["manifest"].loc[2, "image_id"]
    report = run_contracts(frames, taxonomy=TAXONOMY)
    path = tmp_path / "contracts.html"
    path.write_text(render_page(report.results, title="refused"), encoding="utf-8")
    page = offline.open(path)
    shoot(page, "contracts-failed.png", tmp_path)
    failed = page.locator("table.results tr.fail")
    assert failed.count() == 1
    text = failed.inner_text()
    assert "FAIL" in text and "0 < w" in text and "1 of 101 unexpected" in text
    assert bad_id in text and "w=0.0" in text
    assert page.locator("p.verdict").inner_text().startswith("FAILED: 1 of")
    page.locator("h2:has-text('Failed expectations') + ul a").click()
    assert page.url.endswith("#t-manifest_boxes-5")


def test_report_links_resolve_and_open_offline(release: Path, offline: OfflinePage,
                                               tmp_path: Path) -> None:
    page = offline.open(release / "report" / "index.html")
    shoot(page, "report.png", tmp_path)
    assert offline.blocked == []
    hrefs = page.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert {"contracts.html", "../README.md", "../data_docs/index.html"} <= set(hrefs)
    for href in hrefs:
        assert local_target(page.url, href).is_file(), href
    assert "leading_conf (one value per image)" in page.inner_text("body")
    page.locator("a", has_text="Data contracts").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/report/contracts.html")
    assert page.locator("p.verdict").is_visible()
    page.go_back()
    page.locator("a", has_text="Great Expectations Data Docs").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/data_docs/index.html")


def test_data_docs_need_the_network(release: Path, offline: OfflinePage,
                                               tmp_path: Path) -> None:
    """GE's Data Docs load their scripts from CDNs: offline their run list stays empty. The
    contracts page and the report say so; this records that it is still the case."""
    page = offline.open(release / "data_docs" / "index.html")
    shoot(page, "data_docs.png", tmp_path)
    assert any("cdn" in url or "unpkg" in url for url in offline.blocked)
    validation = next((release / "data_docs" / "validations").rglob("*.html"))
    page = offline.open(validation)
    shoot(page, "data_docs_validation.png", tmp_path)
    assert "20000101T000000" in validation.as_posix()  # the fixed run time
