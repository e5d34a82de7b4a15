"""A thin, typed client over ``label-studio-sdk``: the only code that talks to Label Studio.

It creates and reuses projects and storages, imports tasks and reads every annotation back as
plain dicts, so nothing else in the pipeline needs the SDK's types. Tasks carry our
``image_id`` in their data; that is how imported tasks and their annotations are matched back
to images.

Images reach annotators through an import storage attached to the project, never synced (a
sync would create one task per file): local files are served from the server's document root
as ``/data/local-files/?d=<relative path>`` (see :func:`local_file_url`); S3 objects are
referred to as ``s3://bucket/key`` and handed out as presigned URLs.

Accounts: the pipeline acts as an admin through an API token (legacy ``Token`` auth, or a
personal access token, which the SDK refreshes itself). Annotators are ordinary accounts made
through the sign-up form (:func:`create_user`); each one's own token (:func:`user_token`)
makes an annotation that is ``completed_by`` that user (:func:`submit_annotation`), which is
how the simulated crowd and the tests answer.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
from label_studio_sdk import ImportApiRequest, LabelStudio

IMPORT_CHUNK_SIZE = 500
PAGE_SIZE = 100
LOOKUP_PAGE_SIZE = 1000
LOCAL_FILES_URL = "/data/local-files/?d="
PRESIGN_TTL_MINUTES = 60


class AccountError(RuntimeError):
    """A Label Studio account could not be created or logged in to."""


def connect(url: str, token: str, *, timeout: float = 60.0) -> LabelStudio:
    """An SDK client for the server at ``url`` acting as the owner of ``token``."""
    return LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=timeout)


def ensure_project(
    client: LabelStudio, *, title: str, label_config: str, instructions: str | None,
    overlap: int
) -> int:
    """The id of the project called ``title``, created or brought up to date.

    ``overlap`` answers are wanted for every task (``maximum_annotations``, with the overlap
    applied to all tasks); ``instructions`` (HTML) are shown before labeling starts (None:
    left as they are, for :func:`ensure_instructions`). An existing project with that exact
    title is reused and its settings updated where they differ; when several share the title,
    the oldest wins. Label Studio titles are 3 to 50 characters.
    """
    wanted: dict[str, Any] = {
        "label_config": label_config,
        "show_instruction": True,
        "maximum_annotations": overlap,
        "overlap_cohort_percentage": 100,
    }
    if instructions is not None:
        wanted["expert_instruction"] = instructions
    project_id = project_id_by_title(client, title)
    if project_id is None:
        created: Any = client.projects.create(title=title, **wanted)
        return int(created.id)
    current = client.projects.get(project_id)
    changed = {key: value for key, value in wanted.items() if getattr(current, key) != value}
    if changed:
        client.projects.update(project_id, **changed)
    return project_id


def ensure_instructions(client: LabelStudio, *, project_id: int, instructions: str) -> None:
    """Set the project's instructions (HTML) unless they are already exactly these.

    Label Studio cleans the HTML it stores (bleach): write it as stored (``<img ...>``, not
    ``<img .../>``; no ``data:`` URLs, no ``style`` attributes) or it is updated every time.
    """
    if client.projects.get(project_id).expert_instruction != instructions:
        client.projects.update(project_id, expert_instruction=instructions)


def project_id_by_title(client: LabelStudio, title: str) -> int | None:
    """The smallest id among projects titled exactly ``title``, or None."""
    projects: Iterator[Any] = iter(client.projects.list(title=title))
    ids = [int(p.id) for p in projects if p.title == title]
    return min(ids, default=None)


def delete_project(client: LabelStudio, *, project_id: int) -> None:
    """Delete a project with its tasks, annotations and storages (files are left alone)."""
    client.projects.delete(project_id)


def local_file_url(document_root: Path, path: Path) -> str:
    """The URL (relative to the server) under which Label Studio serves a local file.

    ``path`` must lie under ``document_root`` (the server's
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) and under a local import storage of the project.
    """
    relative = Path(path).relative_to(document_root).as_posix()
    return LOCAL_FILES_URL + quote(relative, safe="/")


def project_file_url(project_id: int, uri: str) -> str:
    """A URL (relative to the server) that serves a storage file such as ``s3://bucket/key``
    to the project's users, from anywhere in a page (instructions too): the server redirects
    it to a fresh presigned URL. The project needs a storage for the bucket."""
    encoded = base64.urlsafe_b64encode(uri.encode()).decode()
    return f"/projects/{project_id}/resolve/?fileuri={encoded}"


def ensure_local_storage(client: LabelStudio, *, project_id: int, path: Path) -> int:
    """The id of the project's Local Files import storage for ``path``, created if missing.

    ``path`` is a directory as the server sees it, strictly inside its document root; the
    storage lets the server serve files below it (:func:`local_file_url`). It is never synced.
    """
    wanted = posixpath.normpath(str(path))
    for storage in client.import_storage.local.list(project=project_id):
        if storage.path and posixpath.normpath(storage.path) == wanted:
            return int(storage.id)
    created = client.import_storage.local.create(
        project=project_id, path=wanted, title=Path(wanted).name or wanted, use_blob_urls=True
    )
    return int(created.id)


def ensure_s3_storage(
    client: LabelStudio,
    *,
    project_id: int,
    bucket: str,
    prefix: str,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> int:
    """The id of the project's S3 import storage for ``bucket``/``prefix``, created if missing.

    Tasks then refer to images as ``s3://bucket/key``; the server hands annotators presigned
    URLs. ``endpoint_url`` is for S3-compatible servers (None means AWS); credentials left None
    fall back to the server's own. The server checks that it can reach the bucket on creation.
    """
    for storage in client.import_storage.s3.list(project=project_id):
        if (storage.bucket, storage.prefix or "", storage.s3endpoint or None) == (
            bucket,
            prefix,
            endpoint_url,
        ):
            return int(storage.id)
    options = {
        "s3endpoint": endpoint_url,
        "aws_access_key_id": access_key,
        "aws_secret_access_key": secret_key,
        "region_name": region,
    }
    created = client.import_storage.s3.create(
        project=project_id,
        bucket=bucket,
        prefix=prefix,
        title=f"{bucket}/{prefix}"[:256],
        presign=True,
        presign_ttl=PRESIGN_TTL_MINUTES,
        use_blob_urls=True,
        recursive_scan=True,
        **{key: value for key, value in options.items() if value is not None},
    )
    return int(created.id)


def import_tasks(
    client: LabelStudio, *, project_id: int, tasks: list[dict], key: str = "image_id"
) -> dict[str, int]:
    """Import tasks and return ``data[key] -> task id`` for every task in ``tasks``.

    Each task is ``{"data": {"image": <url>, "image_id": <str>, ...}, "predictions": [...]?}``.
    A task whose ``data[key]`` already has a task in the project is not imported again (a
    rerun is idempotent; use a ``key`` such as ``task_key`` when one image may have several
    tasks); imports go in chunks of ``IMPORT_CHUNK_SIZE`` and ids are looked up afterwards.
    """
    existing = _task_ids_by(client, project_id=project_id, key=key)
    new: dict[str, dict] = {}
    for task in tasks:
        value = str(task["data"][key])
        if value not in existing:
            new.setdefault(value, task)
    for chunk in _chunks(list(new.values()), size=IMPORT_CHUNK_SIZE):
        client.projects.import_tasks(project_id, request=cast(list[ImportApiRequest], chunk))
    if new:
        existing = _task_ids_by(client, project_id=project_id, key=key)
    return {str(t["data"][key]): existing[str(t["data"][key])] for t in tasks}


def _task_ids_by(client: LabelStudio, *, project_id: int, key: str) -> dict[str, int]:
    """``data[key] -> task id`` over the project's tasks (the first task wins on a repeat)."""
    ids: dict[str, int] = {}
    for task in _tasks(client, project_id=project_id, fields="task_only", size=LOOKUP_PAGE_SIZE):
        value = (task.data or {}).get(key)
        if value is not None:
            ids.setdefault(str(value), int(task.id))
    return ids


def _tasks(client: LabelStudio, *, project_id: int, fields: str, size: int) -> Iterator[Any]:
    """The project's tasks, ``size`` per page, with task data exactly as imported.

    ``fields="task_only"`` leaves annotations out; ``"all"`` includes every annotation. Items
    are typed ``Any``: the SDK's task types do not match what the server sends (``annotations``
    is typed as a string but arrives as a list of dicts, which the SDK keeps as it is).
    """
    yield from client.tasks.list(
        project=project_id, fields=fields, page_size=size, resolve_uri=False
    )


def _chunks(items: Sequence[dict], *, size: int) -> Iterator[list[dict]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def list_tasks(client: LabelStudio, *, project_id: int) -> list[dict]:
    """Every task of the project: ``id``, ``data``, ``total_annotations`` (not counting
    cancelled ones) and ``cancelled_annotations``, paging through all of them."""
    pager = _tasks(client, project_id=project_id, fields="task_only", size=PAGE_SIZE)
    return [
        {
            "id": int(task.id),
            "data": dict(task.data or {}),
            "total_annotations": int(task.total_annotations or 0),
            "cancelled_annotations": int(task.cancelled_annotations or 0),
        }
        for task in pager
    ]


def list_annotations(client: LabelStudio, *, project_id: int) -> list[dict]:
    """Every annotation in the project, cancelled (skipped) ones included, as plain dicts.

    Keys: ``annotation_id, task_id, image_id, completed_by, completed_by_email, result,
    created_at, updated_at, was_cancelled, lead_time`` (times as ISO-8601 strings, ``result``
    as Label Studio stores it). Pages through all tasks.
    """
    emails = {int(user.id): user.email for user in client.users.list() if user.id is not None}
    rows: list[dict] = []
    for task in _tasks(client, project_id=project_id, fields="all", size=PAGE_SIZE):
        task_id, image_id = int(task.id), (task.data or {}).get("image_id")
        for annotation in task.annotations or []:
            rows.append(
                _annotation_row(annotation, task_id=task_id, image_id=image_id, emails=emails)
            )
    return rows


def _annotation_row(
    annotation: dict, *, task_id: int, image_id: str | None, emails: dict[int, str | None]
) -> dict:
    """One raw annotation as :func:`list_annotations` promises it."""
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    return {
        "annotation_id": int(annotation["id"]),
        "task_id": task_id,
        "image_id": image_id,
        "completed_by": completed_by,
        "completed_by_email": emails.get(completed_by) if completed_by is not None else None,
        "result": annotation.get("result") or [],
        "created_at": annotation.get("created_at"),
        "updated_at": annotation.get("updated_at"),
        "was_cancelled": bool(annotation.get("was_cancelled")),
        "lead_time": annotation.get("lead_time"),
    }


def submit_annotation(
    client: LabelStudio,
    *,
    task_id: int,
    result: list[dict],
    lead_time: float | None = None,
    was_cancelled: bool = False,
) -> int:
    """Annotate a task as the client's user (``connect(url, user_token(...))``); its id.

    ``was_cancelled=True`` with an empty ``result`` is what the "Skip" button records.
    """
    extra = {} if lead_time is None else {"lead_time": lead_time}
    annotation = client.annotations.create(
        id=task_id, result=result, was_cancelled=was_cancelled, **extra
    )
    return int(annotation.id)


def create_user(url: str, *, email: str, password: str) -> int:
    """Sign up an annotator through the sign-up form; the user's id. Idempotent.

    Label Studio's API creates users without a password, so the form is the only way (short of
    the server's CLI) to make an account that can log in and hold its own token. The account
    joins the server's organization and gets the username ``email``'s local part. When the
    email is taken, logging in with ``password`` must succeed. Sign-up must be open (the
    default, ``DISABLE_SIGNUP_WITHOUT_LINK`` unset). Passwords need 8 or more characters.
    """
    with _browser(url) as browser:
        response = _post_form(browser, "/user/signup/", {"email": email, "password": password})
        if response.status_code != 302:
            _log_in(browser, email=email, password=password)
        whoami = browser.get("/api/current-user/whoami").raise_for_status()
        return int(whoami.json()["id"])


def user_token(url: str, *, email: str, password: str) -> str:
    """The API token of the account ``email``, obtained by logging in with its password."""
    with _browser(url) as browser:
        _log_in(browser, email=email, password=password)
        return str(browser.get("/api/current-user/token").raise_for_status().json()["token"])


def _browser(url: str) -> httpx.Client:
    """An HTTP client that keeps cookies, as a browser session does."""
    return httpx.Client(base_url=url.rstrip("/"), timeout=30.0, follow_redirects=False)


def _log_in(browser: httpx.Client, *, email: str, password: str) -> None:
    """Open a session for ``email``; the login form answers 302 on success."""
    response = _post_form(browser, "/user/login/", {"email": email, "password": password})
    if response.status_code != 302:
        status = response.status_code
        raise AccountError(f"cannot log in to Label Studio as {email} (HTTP {status})")


def _post_form(browser: httpx.Client, path: str, fields: dict[str, str]) -> httpx.Response:
    """POST an HTML form the way Django expects it: CSRF cookie, token field and referer."""
    browser.get(path).raise_for_status()
    csrf = browser.cookies.get("csrftoken") or ""
    referer = f"{browser.base_url}{path.lstrip('/')}"
    data = {**fields, "csrfmiddlewaretoken": csrf}
    response = browser.post(path, data=data, headers={"Referer": referer})
    if response.status_code >= 400:
        raise AccountError(f"{path} answered HTTP {response.status_code}")
    return response
