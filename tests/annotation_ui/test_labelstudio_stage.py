"""The validate and filter flows against a real Label Studio server on 127.0.0.1.

Several annotators, each with their own account and token, submit answers through the
API; the flow pulls them, discounts a careless worker found by the control images,
re-queues an undecided image, sends it to the expert review project, and takes the expert's
verdict. Then filtration runs on what validation accepted.
"""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pandas as pd
import pytest

from annotation_ui import ls_client
from flows.crowd import add_golden, filter_stage, validate
from schemas.crowd import CrowdBackendOptions, Stage
from tasks.catalog import Catalog
from tasks.crowd.stage import latest_verdicts
from tasks.storage import LocalStorage
from tests.catalogs import make_catalog
from tests.servers import LabelStudioEndpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

PREFIX = "stage-test"


def valid_result(answer: str) -> list[dict]:
    """What the validation config records for ``yes`` / ``no:<reason>`` (``no`` alone: none)."""
    valid, _, reason = answer.partition(":")
    out = [{"from_name": "valid", "to_name": "image", "type": "choices",
            "value": {"choices": [valid]}}]
    if reason:
        out.append({"from_name": "reason", "to_name": "image", "type": "choices",
                    "value": {"choices": [reason]}})
    return out


def flags_result(flags: list[str]) -> list[dict]:
    return [{"from_name": "flags", "to_name": "image", "type": "choices",
             "value": {"choices": flags}}]


class Annotators:
    """Accounts on the server, each with its own API client."""

    def __init__(self, endpoint: LabelStudioEndpoint) -> None:
        self.endpoint = endpoint
        self.clients: dict[str, ls_client.LabelStudio] = {}
        self.ids: dict[str, int] = {}

    def __getitem__(self, name: str) -> ls_client.LabelStudio:
        if name not in self.clients:
            email, password = f"{name}@example.com", f"pw-{name}-12345"
            self.ids[name] = ls_client.create_user(self.endpoint.url, email=email,
                                                   password=password)
            token = ls_client.user_token(self.endpoint.url, email=email, password=password)
            self.clients[name] = ls_client.connect(self.endpoint.url, token)
        return self.clients[name]


def task_ids(admin: ls_client.LabelStudio, title: str) -> dict[str, int]:
    pid = ls_client.project_id_by_title(admin, title)
    assert pid is not None, f"no project {title!r}"
    return {t["data"]["task_key"]: t["id"] for t in ls_client.list_tasks(admin, project_id=pid)}


@pytest.fixture(scope="module")
def campaign(label_studio: LabelStudioEndpoint):
    root = label_studio.document_root / "root"
    ids = make_catalog(root, n=9, seed=5)
    golden = root.parent / "golden.csv"
    with golden.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "answer", "reason"])
        w.writerows([[ids[0], "yes", ""], [ids[1], "no", "hand_cut_off"], [ids[2], "yes", ""],
                     [ids[3], "no", "bad_distance"]])
    assert add_golden(str(root), Stage.VALIDATION, golden) == (4, [])
    options = CrowdBackendOptions(kind="labelstudio", ls_url=label_studio.url,
                                  ls_token=label_studio.token, ls_project_prefix=PREFIX,
                                  ls_document_root=str(label_studio.document_root))
    return root, ids, options


def run(stage: Stage, root: Path, options: CrowdBackendOptions) -> dict:
    flow = validate if stage is Stage.VALIDATION else filter_stage
    return flow(root=str(root), crowd="labelstudio", options=options, method="mv",
                overlap=3, max_answers=6, min_confidence=0.75, min_credible=2)


def verdicts(root: Path, stage: Stage) -> dict[str, tuple[str, str | None, str]]:
    v = latest_verdicts(Catalog(LocalStorage(root)), stage)
    return {i: (r["verdict"], None if pd.isna(r["reason"]) else r["reason"], r["method"])
            for i, r in v.iterrows()}


def test_the_full_validation_and_filtration_path(campaign, label_studio):
    root, ids, options = campaign
    g1, g2, g3, g4, i1, i2, i3, i4, i5 = ids
    admin = ls_client.connect(label_studio.url, label_studio.token)
    people = Annotators(label_studio)

    # 1. first run: the project is created from annotation_ui/ and every image is imported
    report = run(Stage.VALIDATION, root, options)
    assert report["pushed"] == 9 and report["queue"] == {"control": 4, "sent": 5}
    title = f"{PREFIX} validation"
    pid = ls_client.project_id_by_title(admin, title)
    project = admin.projects.get(pid)
    assert project.maximum_annotations == 3 and "Assigned gesture" in project.label_config
    assert "leading hand" in project.expert_instruction
    tasks = task_ids(admin, title)
    assert sorted(tasks) == sorted(f"{i}:r1" for i in ids)
    # the image URL in a task is served by Label Studio (local files storage)
    task = admin.tasks.get(tasks[f"{i1}:r1"])
    served = httpx.get(label_studio.url + task.data["image"],
                       headers={"Authorization": f"Token {label_studio.token}"})
    object_key = Catalog(LocalStorage(root)).read_table("images").to_pandas().set_index(
        "image_id").at[i1, "object_key"]
    assert served.status_code == 200 and served.content == (root / object_key).read_bytes()
    assert run(Stage.VALIDATION, root, options)["pushed"] == 0  # nothing new: idempotent

    # 2. annotators answer; "careless" says yes to everything (caught on control g2 and g4)
    answers = {
        "alice": {g1: "yes", g2: "no:hand_cut_off", g3: "yes", g4: "no:other", i1: "yes",
                  i2: "no:wrong_gesture", i3: "yes", i4: "yes", i5: "no"},  # i5: no reason
        "bob": {g1: "yes", g2: "no:hand_cut_off", g3: "yes", g4: "no:bad_distance", i1: "yes",
                i2: "no:wrong_gesture", i3: "yes", i4: "no:other", i5: "yes"},
        "careless": {g1: "yes", g2: "yes", g3: "yes", g4: "yes", i4: "yes"},
        "dora": {i1: "yes", i2: "no:wrong_gesture", i3: "yes", i5: "yes"},
    }
    for name, given in answers.items():
        for image_id, answer in given.items():
            ls_client.submit_annotation(people[name], task_id=tasks[f"{image_id}:r1"],
                                        result=valid_result(answer))
    ls_client.submit_annotation(people["hank"], task_id=tasks[f"{i3}:r1"], result=[],
                                was_cancelled=True)

    report = run(Stage.VALIDATION, root, options)
    careless = f"ls:{people.ids['careless']}"
    assert report["discounted_workers"] == [careless]
    assert report["answers_rejected"] == {"missing_field": 1, "skipped": 1}
    got = verdicts(root, Stage.VALIDATION)
    assert got[i1] == ("accepted", None, "mv")
    assert got[i2] == ("rejected", "wrong_gesture", "mv")
    assert got[i3] == ("accepted", None, "mv")
    assert got[g2] == ("rejected", "hand_cut_off", "golden")
    # i5: a malformed "no", then two credible yes: decided; i4: one credible yes and one no
    # (careless is discounted): asked again
    assert got[i5] == ("accepted", None, "mv")
    assert i4 not in got
    assert report["queue"]["requeued"] == 1
    tasks = task_ids(admin, title)
    assert f"{i4}:r2" in tasks and f"{i5}:r2" not in tasks

    # 3. round 2 with new annotators: i4 stays split -> expert review
    for name, answer in {"erin": "no:other", "fay": "yes", "gus": "no:bad_distance"}.items():
        ls_client.submit_annotation(people[name], task_id=tasks[f"{i4}:r2"],
                                    result=valid_result(answer))
    ls_client.submit_annotation(people["alice"], task_id=tasks[f"{i4}:r2"],
                                result=valid_result("yes"))  # alice again: a duplicate
    report = run(Stage.VALIDATION, root, options)
    assert report["answers_rejected"] == {"duplicate_answer": 1}
    assert report["queue"]["sent_to_review"] == 1
    review = task_ids(admin, f"{PREFIX} validation review")
    assert list(review) == [f"{i4}:r1"]
    ls_client.submit_annotation(people["expert"], task_id=review[f"{i4}:r1"],
                                result=valid_result("no:bad_distance"))
    run(Stage.VALIDATION, root, options)
    assert verdicts(root, Stage.VALIDATION)[i4] == ("rejected", "bad_distance", "review")

    # 4. filtration sees only what validation accepted; one credible flag excludes
    report = run(Stage.FILTRATION, root, options)
    passed = {g1, g3, i1, i3, i5}
    ftasks = task_ids(admin, f"{PREFIX} filtration")
    assert {k.split(":")[0] for k in ftasks} == passed
    for name in ("alice", "bob", "erin"):
        for image_id in passed:
            flags = ["text"] if (name, image_id) == ("bob", i1) else ["none"]
            ls_client.submit_annotation(people[name], task_id=ftasks[f"{image_id}:r1"],
                                        result=flags_result(flags))
    ls_client.submit_annotation(people["fay"], task_id=ftasks[f"{i3}:r1"],
                                result=flags_result(["none", "child"]))  # contradictory
    report = run(Stage.FILTRATION, root, options)
    assert report["answers_rejected"] == {"contradictory": 1}
    got = verdicts(root, Stage.FILTRATION)
    assert got[i1] == ("excluded", "text", "mv")
    assert {i: got[i][0] for i in passed - {i1}} == dict.fromkeys(passed - {i1}, "clear")


def test_an_s3_dataset_root_is_served_through_an_s3_storage(label_studio, s3_server,
                                                            monkeypatch, tmp_path):
    from tasks.simulation.references import write_references
    from tasks.storage import S3Storage

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.client().create_bucket(Bucket="crowd-s3")
    root = "s3://crowd-s3/campaign"
    make_catalog(S3Storage(root, endpoint_url=s3_server.endpoint_url), n=1, seed=9)
    pictures = write_references(tmp_path / "references", size=32)
    options = CrowdBackendOptions(kind="labelstudio", ls_url=label_studio.url,
                                  ls_token=label_studio.token, ls_project_prefix="s3-stage",
                                  ls_references=str(tmp_path / "references"))
    report = validate(root=root, crowd="labelstudio", options=options,
                      s3_endpoint_url=s3_server.endpoint_url)
    assert report["pushed"] == 1
    admin = ls_client.connect(label_studio.url, label_studio.token)
    pid = ls_client.project_id_by_title(admin, "s3-stage validation")
    [task] = ls_client.list_tasks(admin, project_id=pid)
    assert task["data"]["image"].startswith("s3://crowd-s3/campaign/objects/")
    gesture = task["data"]["gesture"]
    assert task["data"]["reference"] == f"s3://crowd-s3/campaign/references/{gesture}.png"
    auth = {"Authorization": f"Token {label_studio.token}"}
    shown = httpx.get(f"{label_studio.url}/api/tasks/{task['id']}/", headers=auth).json()
    for field in ("image", "reference"):  # each served through a fresh presigned URL
        redirect = httpx.get(label_studio.url + shown["data"][field], headers=auth)
        assert redirect.status_code in (302, 303)
        key = task["data"][field].removeprefix("s3://crowd-s3/")
        body = s3_server.client().get_object(Bucket="crowd-s3", Key=key)["Body"].read()
        assert httpx.get(redirect.headers["location"]).content == body
    # the instructions link every picture through the project, which presigns on each view
    html = admin.projects.get(pid).expert_instruction
    [link] = [url for url in html.split('"') if url.startswith(f"/projects/{pid}/resolve/")
              and ls_client.project_file_url(pid, task["data"]["reference"]) == url]
    redirect = httpx.get(label_studio.url + link, headers=auth)
    assert httpx.get(redirect.headers["location"]).content == pictures[gesture].read_bytes()


def rect_result(boxes: list[tuple[float, float, float, float, str]], hand: str) -> list[dict]:
    """What an annotator's rectangles and leading-hand choice look like (percent coords)."""
    out: list[dict] = [{"from_name": "hands", "to_name": "image", "type": "rectanglelabels",
                        "original_width": 96, "original_height": 64,
                        "value": {"x": x * 100, "y": y * 100, "width": w * 100,
                                  "height": h * 100, "rotation": 0,
                                  "rectanglelabels": [label]}}
                       for x, y, w, h, label in boxes]
    out.append({"from_name": "leading_hand", "to_name": "image", "type": "choices",
                "value": {"choices": [hand]}})
    return out


def test_annotation_in_label_studio_with_preannotations(label_studio):
    import datetime as dt

    import pyarrow as pa

    from flows.annotate import annotate
    from schemas.crowd import Verdict
    from schemas.tables import PREANNOTATIONS
    from tasks.crowd.queue import Decision
    from tasks.crowd.stage import verdict_table

    root = label_studio.document_root / "annot-root"
    ids = make_catalog(root, n=2, seed=8)
    cat = Catalog(LocalStorage(root))
    now = dt.datetime.now(dt.UTC)
    for stage, verdict in ((Stage.VALIDATION, Verdict.ACCEPTED), (Stage.FILTRATION,
                                                                  Verdict.CLEAR)):
        cat.write_batch(f"0000-{stage.value}", {"verdicts": verdict_table(
            stage, [Decision(i, verdict, None, 1.0, 3, "mv") for i in ids], batch_id="t",
            now=now)}, info={})
    pre = '{"bboxes":[[0.1,0.1,0.2,0.3]],"labels":["like"],"leading_hand":"right"}'
    cat.write_batch("0001-pre", {"preannotations": pa.Table.from_pylist(
        [{"image_id": ids[0], "answer": pre, "source": "test", "batch_id": "p",
          "added_at": now}], schema=PREANNOTATIONS)}, info={})
    options = CrowdBackendOptions(kind="labelstudio", ls_url=label_studio.url,
                                  ls_token=label_studio.token, ls_project_prefix="ann-test",
                                  ls_document_root=str(label_studio.document_root))
    assert annotate(root=str(root), crowd="labelstudio", options=options)["pushed"] == 2

    admin = ls_client.connect(label_studio.url, label_studio.token)
    pid = ls_client.project_id_by_title(admin, "ann-test annotation")
    config = admin.projects.get(pid).label_config
    assert 'name="hands"' in config and 'value="$labels"' in config  # labels: per task
    tasks = task_ids(admin, "ann-test annotation")
    task = admin.tasks.get(tasks[f"{ids[0]}:r1"])
    labels = [option["value"] for option in task.data["labels"]]
    assert "no_gesture" in labels and "two_up_inverted" in labels
    gesture = cat.read_table("images").to_pandas().set_index("image_id").at[ids[0], "gesture"]
    assert [o["value"] for o in task.data["labels"] if o.get("selected")] == [gesture]
    [prediction] = task.predictions
    [box] = [r for r in prediction.result if r["type"] == "rectanglelabels"]
    assert box["value"]["rectanglelabels"] == ["like"]
    assert box["value"]["x"] == pytest.approx(10.0) and box["value"]["height"] == pytest.approx(30)

    people = Annotators(label_studio)
    drawn = {"ann1": [(0.10, 0.10, 0.20, 0.30, "like"), (0.6, 0.5, 0.1, 0.2, "no_gesture")],
             "ann2": [(0.11, 0.10, 0.20, 0.30, "like"), (0.6, 0.5, 0.1, 0.2, "no_gesture")],
             "ann3": [(0.10, 0.12, 0.20, 0.28, "like")]}  # missed the free hand
    for name, boxes in drawn.items():
        ls_client.submit_annotation(people[name], task_id=tasks[f"{ids[0]}:r1"],
                                    result=rect_result(boxes, "right"))
        ls_client.submit_annotation(people[name], task_id=tasks[f"{ids[1]}:r1"],
                                    result=rect_result([(0.3, 0.3, 0.2, 0.2, "bogus")], "left"))
    report = annotate(root=str(root), crowd="labelstudio", options=options)
    assert report["answers_rejected"] == {"no_boxes": 3}  # ids[1]: only unknown labels
    rows = cat.read_table("boxes").to_pandas().sort_values("box_index")
    assert rows["image_id"].unique().tolist() == [ids[0]]
    assert rows["label"].tolist() == ["like", "no_gesture"]
    assert rows["n_votes"].tolist() == [3, 2]
    assert rows.iloc[0][["x", "y", "w", "h"]].tolist() == pytest.approx([0.1, 0.1, 0.2, 0.3])
    assert (rows["leading_hand"] == "right").all() and (rows["leading_conf"] == 1.0).all()
    assert report["queue"]["requeued"] == 1

    # an audit flags the decided image: it goes to the review project, which shows the note
    # and the current boxes; the expert's correction replaces them
    from schemas.tables import LABEL_ISSUES

    flagged_at = dt.datetime.now(dt.UTC)
    issue = {"release": "v1", "image_id": ids[0], "box_index": 0, "head": "gesture",
             "given_label": "like", "suggested_label": "peace", "quality": 0.01,
             "audit_id": "audit-ls", "flagged_at": flagged_at}
    cat.write_batch(f"{flagged_at:%Y%m%dT%H%M%S%f}-audit-ls", {"label_issues": pa.Table.from_pylist(
        [issue], schema=LABEL_ISSUES)}, info={"kind": "audit"})
    report = annotate(root=str(root), crowd="labelstudio", options=options)
    assert report["label_reviews_sent"] == 1
    review_pid = ls_client.project_id_by_title(admin, "ann-test annotation review")
    assert "Why this image is back: $note" in admin.projects.get(review_pid).label_config
    assert "$note" not in config  # the crowd project's config does not show it
    [(key, review_id)] = task_ids(admin, "ann-test annotation review").items()
    assert key.startswith(f"{ids[0]}:")
    review = admin.tasks.get(review_id)
    assert "gesture like -> peace" in review.data["note"]
    [shown] = review.predictions
    assert sorted(r["value"]["rectanglelabels"][0] for r in shown.result
                  if r["type"] == "rectanglelabels") == ["like", "no_gesture"]
    ls_client.submit_annotation(people["expert"], task_id=review_id, result=rect_result(
        [(0.1, 0.1, 0.2, 0.3, "peace"), (0.6, 0.5, 0.1, 0.2, "no_gesture")], "right"))
    report = annotate(root=str(root), crowd="labelstudio", options=options)
    assert report["label_reviews_decided"] == 1
    boxes = cat.read_table("boxes").to_pandas()
    latest = boxes[boxes["method"] == "review"].sort_values("box_index")
    assert latest["image_id"].unique().tolist() == [ids[0]]
    assert latest["label"].tolist() == ["peace", "no_gesture"]
