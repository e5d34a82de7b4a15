"""What the Label Studio projects show and store, checked without a server: label configs,
instructions, reference pictures and the task data the back end imports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from annotation_ui.configs import (
    box_label_options,
    instructions,
    label_config,
    result_value,
)
from annotation_ui.labelstudio_crowd import LabelStudioCrowd
from annotation_ui.references import (
    ReferencePicturesError,
    read_references,
    reference_files,
    reference_grid,
)
from schemas.crowd import (
    FILTRATION_FLAGS,
    NONE_FLAG,
    VALIDATION_REASONS,
    CrowdSettings,
    Queue,
    Stage,
)
from schemas.taxonomy import load_taxonomy
from tasks.crowd.answers import canonical_answer
from tasks.crowd.backends import CrowdTask
from tasks.storage import LocalStorage

V1 = load_taxonomy().gestures
STORED = {  # what each Choices control records: the answers table depends on these values
    (Stage.VALIDATION, "valid"): {"yes", "no"},
    (Stage.VALIDATION, "reason"): set(VALIDATION_REASONS),
    (Stage.FILTRATION, "flags"): {*FILTRATION_FLAGS, NONE_FLAG},
    (Stage.ANNOTATION, "leading_hand"): {"left", "right"},
}


def parsed(stage: Stage, **options: bool) -> ET.Element:
    return ET.fromstring(label_config(stage, **options))


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("review", [False, True])
@pytest.mark.parametrize("references", [False, True])
def test_every_config_parses_and_stores_the_same_values(stage, review, references):
    root = parsed(stage, review=review, references=references)
    for choices in root.iter("Choices"):
        stored = {c.get("alias") or c.get("value") for c in choices.iter("Choice")}
        assert stored == STORED[(stage, choices.get("name"))]
        for choice in choices.iter("Choice"):  # readable text on the page, the id stored
            assert choice.get("alias") and "_" not in str(choice.get("value"))
            assert choice.get("value") != choice.get("alias")
    for view in root.iter("View"):  # visibility follows stored values, not the shown text
        if view.get("whenChoiceValue"):
            assert view.get("whenChoiceValue") in STORED[(stage, view.get("whenTagName"))]
    images = {i.get("name"): i.get("value") for i in root.iter("Image")}
    shows_reference = references and stage is not Stage.FILTRATION
    assert images == {"image": "$image", **({"reference": "$reference"} if shows_reference
                                            else {})}
    assert ("$note" in label_config(stage, review=review)) is (review
                                                               and stage is Stage.ANNOTATION)


def test_validation_asks_for_a_comment_when_the_reason_is_other():
    root = parsed(Stage.VALIDATION)
    [box] = [v for v in root.iter("View") if v.get("whenChoiceValue") == "other"]
    assert box.get("visibleWhen") == "choice-selected" and box.get("whenTagName") == "reason"
    [comment] = box.iter("TextArea")
    assert comment.get("name") == "comment" and comment.get("required") == "true"
    texts = {c.get("alias"): c.get("value") for c in root.iter("Choice")}
    assert texts["wrong_gesture"] == "Wrong gesture" and texts["other"].startswith("Other")
    # a comment does not change the stored answer
    result = [{"from_name": "valid", "type": "choices", "value": {"choices": ["no"]}},
              {"from_name": "reason", "type": "choices", "value": {"choices": ["other"]}},
              {"from_name": "comment", "type": "textarea", "value": {"text": ["a mask"]}}]
    assert canonical_answer(Stage.VALIDATION, result_value(Stage.VALIDATION, result)) == "no:other"


def test_annotation_shows_the_assigned_gesture_on_its_own_line_and_asks_for_their_own_hand():
    root = parsed(Stage.ANNOTATION)
    headers = [h.get("value") for h in root.iter("Header")]
    assert "Assigned gesture: $gesture" in headers
    assert any("person's own hand" in str(h) for h in headers)
    [labels] = root.iter("RectangleLabels")
    assert labels.get("value") == "$labels"  # per task: the assigned gesture's label selected
    options = box_label_options(load_taxonomy().box_labels, assigned="rock")
    assert [o["value"] for o in options] == [*V1, "no_gesture"]
    assert [o["value"] for o in options if o.get("selected")] == ["rock"]


@pytest.mark.parametrize("stage", list(Stage))
def test_instructions_show_bullets_and_every_reference_picture(stage):
    urls = {g: f"/data/local-files/?d=root/references/{g}.png" for g in V1}
    plain, with_pictures = instructions(stage), instructions(stage, references=urls)
    for html in (plain, with_pictures):  # as Label Studio stores it: no "/>", no ">" in CSS
        assert "list-style: disc" in html and "<ul>" in html
        assert "/>" not in html and ">" not in html.split("</style>")[0].split("<style>")[1]
    assert "reference picture" not in plain.lower()
    if stage is Stage.FILTRATION:
        return
    for gesture, url in urls.items():
        assert f'<img src="{url}" alt="{gesture}"' in with_pictures
        assert f"<figcaption>{gesture}</figcaption>" in with_pictures


def test_a_reference_folder_needs_exactly_one_picture_per_class():
    names = [f"{g}.png" for g in V1 if g != "three2"] + ["THREE2.JPG", "notes.txt", "x.png"]
    assert reference_files(names, gestures=V1)["three2"] == "THREE2.JPG"
    with pytest.raises(ReferencePicturesError, match="no picture for peace_inverted, three2"):
        reference_files([n for n in names if not n.startswith(("peace_inv", "THREE2"))],
                        gestures=V1)
    with pytest.raises(ReferencePicturesError, match=r"several pictures for call \(call.jpg"):
        reference_files([*names, "call.jpg"], gestures=V1)
    assert reference_grid({"call": "/a?d=1&x"}).count("<figure") == 1


@pytest.fixture
def references(tmp_path: Path) -> Path:
    from tasks.simulation.references import write_references

    folder = tmp_path / "references"
    write_references(folder, size=32)
    return folder


def backend(tmp_path: Path, references: Path | None) -> LabelStudioCrowd:
    """A back end whose server is never reached (nothing here talks to it)."""
    return LabelStudioCrowd(url="http://127.0.0.1:9", token="t", root=LocalStorage(
        tmp_path / "root"), prefix="t", settings=CrowdSettings(), document_root=tmp_path,
        references=None if references is None else str(references))


def test_tasks_carry_the_assigned_gesture_s_reference_picture(tmp_path, references):
    crowd = backend(tmp_path, references)
    task = CrowdTask("img", Queue.CROWD, 1, 3, 0, False, "objects/ab/ab.jpg", "three2")
    data = crowd.task_payload(Stage.VALIDATION, task)["data"]
    assert data["reference"] == "/data/local-files/?d=root/references/three2.png"
    copied = tmp_path / "root" / "references" / "three2.png"
    assert copied.read_bytes() == (references / "three2.png").read_bytes()
    assert set(crowd.reference_keys()) == set(V1)
    annotation = crowd.task_payload(Stage.ANNOTATION, task)["data"]
    assert annotation["reference"] == data["reference"]
    assert [o["value"] for o in annotation["labels"] if o.get("selected")] == ["three2"]
    assert "reference" not in crowd.task_payload(Stage.FILTRATION, task)["data"]
    assert "reference" not in backend(tmp_path, None).task_payload(Stage.VALIDATION,
                                                                   task)["data"]
    pictures = read_references(LocalStorage(references), gestures=V1)
    assert {suffix for suffix, _ in pictures.values()} == {".png"}


def test_a_folder_missing_a_class_stops_the_run_before_any_project(tmp_path, references):
    from flows.crowd import make_backend
    from schemas.crowd import CrowdBackendOptions
    from tasks.catalog import Catalog

    (references / "two_up_inverted.png").unlink()
    crowd = backend(tmp_path, references)  # its server does not exist: nothing is created
    with pytest.raises(ReferencePicturesError, match="no picture for two_up_inverted"):
        crowd.project(Stage.VALIDATION, Queue.CROWD)
    options = CrowdBackendOptions(kind="labelstudio", ls_url="http://127.0.0.1:9", ls_token="t",
                                  ls_document_root=str(tmp_path), ls_references=str(references))
    with pytest.raises(ReferencePicturesError, match=f"{references}: .*two_up_inverted"):
        make_backend(options, Catalog(LocalStorage(tmp_path / "root")), settings=CrowdSettings())
