"""What annotators see in Label Studio at 1600x1000: a real server, a real browser.

A portrait photo drawn by the generator goes through the Label Studio back end into a
validation and an annotation project with the generator's reference pictures; a logged-in
browser opens each task page, takes screenshots (``tmp_path``, and ``$HAGRID_SCREENSHOTS``
when set) and answers the task, and the stored answers are read back through the API.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from annotation_ui import ls_client
from annotation_ui.configs import instructions, result_value
from annotation_ui.labelstudio_crowd import LabelStudioCrowd
from schemas.crowd import CrowdSettings, Queue, Stage
from schemas.taxonomy import load_taxonomy
from tasks.catalog import object_key
from tasks.crowd.answers import canonical_answer
from tasks.crowd.backends import CrowdTask, PushedTask
from tasks.storage import LocalStorage
from tests.servers import LabelStudioEndpoint

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1600, "height": 1000}
GESTURE = "peace_inverted"  # seed 0 of a one-photo batch draws it in a portrait photo
LOADED = "img => img.complete && img.naturalWidth > 0"


@dataclass(frozen=True)
class Pushed:
    crowd: LabelStudioCrowd
    validation: PushedTask
    annotation: PushedTask


@pytest.fixture(scope="module")
def pushed(label_studio: LabelStudioEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """One portrait photo in a validation and an annotation project, with reference pictures."""
    from tasks.simulation.generator import generate_batch
    from tasks.simulation.references import write_references

    base = tmp_path_factory.mktemp("pages")
    generate_batch(base / "batch", n=1, seed=0, gestures=(GESTURE,), dup_rate=0,
                   problems=False, hard_negatives=False, workers=1)
    photo = (base / "batch" / "photos" / "000001.jpg").read_bytes()
    root = LocalStorage(label_studio.document_root / "pages-root")
    key = object_key(hashlib.sha256(photo).hexdigest(), "JPEG")
    root.write_bytes(key, photo)
    write_references(base / "references")
    crowd = LabelStudioCrowd(url=label_studio.url, token=label_studio.token, root=root,
                             prefix="pages", settings=CrowdSettings(),
                             document_root=label_studio.document_root,
                             references=str(base / "references"))
    task = CrowdTask("portrait", Queue.CROWD, 1, 3, 0, False, key, GESTURE, 1080, 1920)
    [validation] = crowd.push(Stage.VALIDATION, [task], batch_id="pages")
    [annotation] = crowd.push(Stage.ANNOTATION, [task], batch_id="pages")
    return Pushed(crowd, validation, annotation)


@pytest.fixture(scope="module")
def page(browser: Any, label_studio: LabelStudioEndpoint) -> Any:
    """A 1600x1000 page logged in as the server's admin through the login form."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("input[name=email]", label_studio.username)
    page.fill("input[name=password]", label_studio.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    yield page
    page.close()


def open_task(page: Any, url: str, project_id: int, task: PushedTask) -> None:
    """The labeling page of ``task``, once its photo and reference picture have loaded."""
    page.goto(f"{url}/projects/{project_id}/data?task={task.external_id}")
    for image in (".hagrid-photo img", ".hagrid-reference img"):
        page.wait_for_function(f"() => [...document.querySelectorAll('{image}')]"
                               f".some({LOADED})", timeout=30_000)


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("HAGRID_SCREENSHOTS"):
        folder = Path(os.environ["HAGRID_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, folder / name)


def bottom(page: Any, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    return float(box["y"] + box["height"])


def toolbar_top(page: Any) -> float:
    box = page.locator(".lsf-bottombar").first.bounding_box()
    assert box is not None and box["y"] <= VIEWPORT["height"]
    return float(box["y"])


def choose(page: Any, text: str) -> None:
    """Click the choice showing ``text``."""
    page.locator(f'.lsf-choice__item label:has(input[name="{text}"])').click()


def submitted(admin: Any, project_id: int) -> dict:
    """The project's one annotation, once the page's submit has reached the server."""
    deadline = time.monotonic() + 15
    while not (annotations := ls_client.list_annotations(admin, project_id=project_id)):
        assert time.monotonic() < deadline, "the annotation was not saved"
        time.sleep(0.3)
    [annotation] = annotations
    return annotation


def test_validation_answers_are_in_view_readable_and_stored_as_ids(
        pushed: Pushed, page: Any, label_studio: LabelStudioEndpoint, tmp_path: Path) -> None:
    pid = pushed.crowd.project(Stage.VALIDATION, Queue.CROWD)
    open_task(page, label_studio.url, pid, pushed.validation)
    shoot(page, tmp_path, "validation.png")
    side = page.locator(".hagrid-side")
    assert side.locator("h3, h4").first.inner_text() == f"Assigned gesture: {GESTURE}"
    limit = toolbar_top(page)
    assert bottom(page, ".hagrid-photo img") <= limit  # the whole portrait photo, no scroll
    assert bottom(page, ".hagrid-reference .lsf-image") <= limit
    assert bottom(page, ".hagrid-side .lsf-choices") <= limit

    choose(page, "No")
    choose(page, "Other (say what below)")
    page.locator(".hagrid-side textarea").fill("a second person's hand covers the gesture")
    shoot(page, tmp_path, "validation-no-other.png")
    assert bottom(page, ".hagrid-side textarea") <= limit
    shown = side.inner_text()
    assert "Wrong gesture" in shown and "Hand cut off by the frame" in shown
    assert not {"wrong_gesture", "hand_cut_off", "bad_distance", "other"} & set(shown.split())

    page.locator("[data-testid=bottombar-submit-button]").click()
    admin = ls_client.connect(label_studio.url, label_studio.token)
    answer = submitted(admin, pid)
    assert canonical_answer(Stage.VALIDATION,
                            result_value(Stage.VALIDATION, answer["result"])) == "no:other"
    [comment] = [r for r in answer["result"] if r["from_name"] == "comment"]
    assert comment["value"]["text"] == ["a second person's hand covers the gesture"]


def test_the_instructions_show_every_reference_picture_as_bullets_and_a_grid(
        pushed: Pushed, page: Any, label_studio: LabelStudioEndpoint, tmp_path: Path) -> None:
    pid = pushed.crowd.project(Stage.VALIDATION, Queue.CROWD)
    urls = {g: pushed.crowd.page_url(pid, key) for g, key in pushed.crowd.reference_keys().items()}
    admin = ls_client.connect(label_studio.url, label_studio.token)
    # stored as sent (Label Studio cleans the HTML): a rerun does not update the project
    assert admin.projects.get(pid).expert_instruction == instructions(Stage.VALIDATION,
                                                                      references=urls)
    open_task(page, label_studio.url, pid, pushed.validation)
    page.get_by_role("button", name="Instructions").first.click()
    grid = page.locator(".hagrid-refs")
    grid.wait_for()
    page.wait_for_function(f"() => [...document.querySelectorAll('.hagrid-ref img')]"
                           f".every({LOADED})", timeout=15_000)
    shoot(page, tmp_path, "validation-instructions.png")
    captions = grid.locator("figcaption").all_inner_texts()
    assert captions == list(load_taxonomy().gestures)  # three2, two_up_inverted... all there
    bullet = page.locator(".hagrid-instructions li").first.evaluate(
        "li => getComputedStyle(li).listStyleType")
    assert bullet == "disc"
    page.keyboard.press("Escape")


def test_annotation_shows_the_assigned_label_selected_and_asks_for_their_own_hand(
        pushed: Pushed, page: Any, label_studio: LabelStudioEndpoint, tmp_path: Path) -> None:
    pid = pushed.crowd.project(Stage.ANNOTATION, Queue.CROWD)
    open_task(page, label_studio.url, pid, pushed.annotation)
    shoot(page, tmp_path, "annotation.png")
    side = page.locator(".hagrid-side")
    assert side.locator("h3, h4").first.inner_text() == f"Assigned gesture: {GESTURE}"
    assert "person's own hand" in side.inner_text()
    selected = page.locator(".lsf-label_selected .lsf-label__text").all_inner_texts()
    assert selected == [GESTURE]  # a box drawn now gets the assigned gesture's label
    limit = toolbar_top(page)
    assert bottom(page, ".lsf-labels") <= limit and bottom(page, ".hagrid-side .lsf-choices") <= limit

    canvas = page.locator(".hagrid-photo .konvajs-content").first.bounding_box()
    assert canvas is not None
    x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 3
    page.mouse.move(x - 30, y - 30)
    page.mouse.down()
    page.mouse.move(x + 30, y + 30, steps=5)
    page.mouse.up()
    choose(page, "Their right hand")
    shoot(page, tmp_path, "annotation-box.png")
    page.locator("[data-testid=bottombar-submit-button]").click()
    admin = ls_client.connect(label_studio.url, label_studio.token)
    result = submitted(admin, pid)["result"]
    assert [r["value"]["rectanglelabels"] for r in result
            if r["type"] == "rectanglelabels"] == [[GESTURE]]
    assert [r["value"]["choices"] for r in result if r["type"] == "choices"] == [["right"]]
