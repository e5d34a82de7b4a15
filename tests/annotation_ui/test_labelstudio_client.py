"""annotation_ui.ls_client against a real Label Studio server on loopback (``.venv-ls``)."""

from __future__ import annotations

import io
import itertools
from typing import Any

import httpx
import pytest
from PIL import Image

from annotation_ui import ls_client
from tests.servers import LabelStudioEndpoint, S3Endpoint

pytestmark = pytest.mark.slow

LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="valid" toName="image"><Choice value="yes"/><Choice value="no"/></Choices>'
    "</View>"
)
_titles = itertools.count()


def yes_or_no(choice: str) -> list[dict]:
    """The result list that answering ``choice`` in :data:`LABEL_CONFIG` produces."""
    return [
        {
            "from_name": "valid",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [choice]},
        }
    ]


def jpeg_bytes(seed: int) -> bytes:
    """A small JPEG whose bytes depend on ``seed``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (seed % 256, 40, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_tasks(n: int, *, prefix: str) -> list[dict]:
    """``n`` tasks pointing at (not necessarily existing) local files."""
    return [
        {
            "data": {
                "image": f"/data/local-files/?d=none/{prefix}{i}.jpg",
                "image_id": f"{prefix}{i}",
            }
        }
        for i in range(n)
    ]


@pytest.fixture
def admin(label_studio: LabelStudioEndpoint) -> ls_client.LabelStudio:
    return ls_client.connect(label_studio.url, label_studio.token)


@pytest.fixture
def project_id(admin: ls_client.LabelStudio) -> int:
    """A fresh project with room for three answers per task."""
    title = f"client test {next(_titles)}"
    return ls_client.ensure_project(
        admin, title=title, label_config=LABEL_CONFIG, instructions="<p>Is it valid?</p>", overlap=3
    )


@pytest.fixture(scope="session")
def annotators(label_studio: LabelStudioEndpoint) -> list[tuple[int, str, str]]:
    """Three annotator accounts: (user id, email, API token)."""
    accounts = []
    for i in range(3):
        email, password = f"annotator{i}@example.com", f"annotator-password-{i}"
        user_id = ls_client.create_user(label_studio.url, email=email, password=password)
        token = ls_client.user_token(label_studio.url, email=email, password=password)
        accounts.append((user_id, email, token))
    return accounts


def test_project_is_created_then_reused_by_title(admin: ls_client.LabelStudio) -> None:
    options: dict[str, Any] = {"label_config": LABEL_CONFIG, "instructions": "<p>Look closely.</p>"}
    first = ls_client.ensure_project(admin, title="validation batch", overlap=3, **options)
    again = ls_client.ensure_project(admin, title="validation batch", overlap=3, **options)
    other = ls_client.ensure_project(admin, title="validation batch 2", overlap=3, **options)
    assert first == again != other

    project = admin.projects.get(first)
    assert (project.maximum_annotations, project.overlap_cohort_percentage) == (3, 100)
    assert project.show_instruction is True
    assert project.expert_instruction == "<p>Look closely.</p>"

    assert ls_client.ensure_project(admin, title="validation batch", overlap=5, **options) == first
    assert admin.projects.get(first).maximum_annotations == 5
    ls_client.delete_project(admin, project_id=other)
    assert (
        ls_client.ensure_project(admin, title="validation batch 2", overlap=3, **options) != other
    )


def test_imported_task_image_is_served_from_local_storage(
    admin: ls_client.LabelStudio, project_id: int, label_studio: LabelStudioEndpoint
) -> None:
    objects = label_studio.document_root / "objects"
    image = objects / "ab" / "abcdef.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(jpeg_bytes(7))
    storage = ls_client.ensure_local_storage(admin, project_id=project_id, path=objects)
    assert ls_client.ensure_local_storage(admin, project_id=project_id, path=objects) == storage

    url = ls_client.local_file_url(label_studio.document_root, image)
    assert url == "/data/local-files/?d=objects/ab/abcdef.jpg"
    ids = ls_client.import_tasks(
        admin, project_id=project_id, tasks=[{"data": {"image": url, "image_id": "abcdef"}}]
    )
    [task] = ls_client.list_tasks(admin, project_id=project_id)
    assert ids == {"abcdef": task["id"]}
    assert task["data"] == {"image": url, "image_id": "abcdef"}

    served = httpx.get(label_studio.url + task["data"]["image"], headers=auth(label_studio.token))
    assert served.status_code == 200
    assert served.content == image.read_bytes()
    anonymous = httpx.get(label_studio.url + url, follow_redirects=False)
    assert anonymous.status_code != 200


def test_imported_task_image_is_presigned_from_s3_storage(
    admin: ls_client.LabelStudio,
    project_id: int,
    label_studio: LabelStudioEndpoint,
    s3_server: S3Endpoint,
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="ls-client-test")
    s3.put_object(Bucket="ls-client-test", Key="objects/cd/cdef01.jpg", Body=jpeg_bytes(9))
    options: dict[str, Any] = {
        "project_id": project_id,
        "bucket": "ls-client-test",
        "prefix": "objects/",
        "endpoint_url": s3_server.endpoint_url,
        "access_key": s3_server.access_key_id,
        "secret_key": s3_server.secret_access_key,
        "region": s3_server.region,
    }
    storage = ls_client.ensure_s3_storage(admin, **options)
    assert ls_client.ensure_s3_storage(admin, **options) == storage

    task = {"data": {"image": "s3://ls-client-test/objects/cd/cdef01.jpg", "image_id": "cdef01"}}
    task_id = ls_client.import_tasks(admin, project_id=project_id, tasks=[task])["cdef01"]
    assert ls_client.list_tasks(admin, project_id=project_id)[0]["data"] == task["data"]

    # What the labeling UI gets: a server URL that redirects to a presigned S3 URL.
    shown = httpx.get(f"{label_studio.url}/api/tasks/{task_id}/", headers=auth(label_studio.token))
    resolve_url = label_studio.url + shown.json()["data"]["image"]
    redirect = httpx.get(resolve_url, headers=auth(label_studio.token))
    assert redirect.status_code in (302, 303)
    assert redirect.headers["location"].startswith(f"{s3_server.endpoint_url}/ls-client-test/")
    assert "X-Amz-Signature=" in redirect.headers["location"]
    assert httpx.get(redirect.headers["location"]).content == jpeg_bytes(9)


def test_import_120_tasks_in_chunks_and_list_them_all(
    admin: ls_client.LabelStudio, project_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ls_client, "IMPORT_CHUNK_SIZE", 50)
    tasks = image_tasks(120, prefix="img")
    prediction = {"result": yes_or_no("no"), "score": 0.25, "model_version": "prefilter-1"}
    tasks[0]["predictions"] = [prediction]
    ids = ls_client.import_tasks(admin, project_id=project_id, tasks=tasks)
    assert sorted(ids) == sorted(t["data"]["image_id"] for t in tasks)
    assert len(set(ids.values())) == 120

    listed = ls_client.list_tasks(admin, project_id=project_id)
    assert len(listed) == 120 > ls_client.PAGE_SIZE
    assert {t["data"]["image_id"]: t["id"] for t in listed} == ids
    assert all(t["total_annotations"] == 0 for t in listed)
    [predicted] = admin.predictions.list(task=ids["img0"])
    assert (predicted.result, predicted.model_version) == (yes_or_no("no"), "prefilter-1")

    # A rerun imports only what is new and still maps every image it was given.
    rerun = tasks[100:] + image_tasks(1, prefix="new")
    again = ls_client.import_tasks(admin, project_id=project_id, tasks=rerun)
    assert {k: again[k] for k in list(ids)[100:]} == {k: ids[k] for k in list(ids)[100:]}
    assert again.keys() == {t["data"]["image_id"] for t in rerun}
    assert again["new0"] not in ids.values()
    assert len(ls_client.list_tasks(admin, project_id=project_id)) == 121


def test_list_annotations_pages_through_every_task(
    admin: ls_client.LabelStudio, project_id: int
) -> None:
    ids = ls_client.import_tasks(admin, project_id=project_id, tasks=image_tasks(120, prefix="p"))
    for image_id in ("p0", "p119"):
        ls_client.submit_annotation(admin, task_id=ids[image_id], result=yes_or_no("yes"))
    annotations = ls_client.list_annotations(admin, project_id=project_id)
    assert sorted(a["image_id"] for a in annotations) == ["p0", "p119"]


def test_three_annotators_answer_the_same_task(
    admin: ls_client.LabelStudio,
    project_id: int,
    label_studio: LabelStudioEndpoint,
    annotators: list[tuple[int, str, str]],
) -> None:
    task_id = ls_client.import_tasks(
        admin, project_id=project_id, tasks=image_tasks(1, prefix="s")
    )["s0"]
    for (_, _, token), choice, seconds in zip(annotators, ["yes", "no", "yes"], [1.5, 2.5, 3.5]):
        as_annotator = ls_client.connect(label_studio.url, token)
        ls_client.submit_annotation(
            as_annotator, task_id=task_id, result=yes_or_no(choice), lead_time=seconds
        )

    annotations = ls_client.list_annotations(admin, project_id=project_id)
    assert len(annotations) == 3
    by_user = {a["completed_by"]: a for a in annotations}
    assert sorted(by_user) == sorted(user_id for user_id, _, _ in annotators)
    for (user_id, email, _), choice, seconds in zip(
        annotators, ["yes", "no", "yes"], [1.5, 2.5, 3.5]
    ):
        answer = by_user[user_id]
        assert answer["completed_by_email"] == email
        assert (answer["task_id"], answer["image_id"]) == (task_id, "s0")
        assert answer["result"] == yes_or_no(choice)
        assert answer["lead_time"] == seconds
        assert answer["was_cancelled"] is False
        assert answer["created_at"] and answer["updated_at"]
    assert ls_client.list_tasks(admin, project_id=project_id)[0]["total_annotations"] == 3


def test_a_skipped_task_is_reported_as_cancelled(
    admin: ls_client.LabelStudio,
    project_id: int,
    label_studio: LabelStudioEndpoint,
    annotators: list[tuple[int, str, str]],
) -> None:
    task_id = ls_client.import_tasks(
        admin, project_id=project_id, tasks=image_tasks(1, prefix="k")
    )["k0"]
    user_id, _, token = annotators[0]
    as_annotator = ls_client.connect(label_studio.url, token)
    skipped = ls_client.submit_annotation(
        as_annotator, task_id=task_id, result=[], was_cancelled=True
    )

    [annotation] = ls_client.list_annotations(admin, project_id=project_id)
    assert annotation["annotation_id"] == skipped
    assert (annotation["completed_by"], annotation["was_cancelled"]) == (user_id, True)
    assert annotation["result"] == []
    [task] = ls_client.list_tasks(admin, project_id=project_id)
    assert (task["total_annotations"], task["cancelled_annotations"]) == (0, 1)


def test_create_user_is_idempotent_and_checks_the_password(
    label_studio: LabelStudioEndpoint,
) -> None:
    email, password = "repeat@example.com", "repeat-password-1"
    user_id = ls_client.create_user(label_studio.url, email=email, password=password)
    assert ls_client.create_user(label_studio.url, email=email, password=password) == user_id
    with pytest.raises(ls_client.AccountError):
        ls_client.create_user(label_studio.url, email=email, password="not-the-password")
    with pytest.raises(ls_client.AccountError):
        ls_client.user_token(label_studio.url, email=email, password="not-the-password")
    token = ls_client.user_token(label_studio.url, email=email, password=password)
    assert ls_client.connect(label_studio.url, token).users.whoami().id == user_id


def auth(token: str) -> dict[str, str]:
    """The header of Label Studio's legacy token authentication."""
    return {"Authorization": f"Token {token}"}
