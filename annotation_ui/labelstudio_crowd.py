"""The Label Studio crowd back end: one project per stage, plus one expert review project.

Projects are created (or reused by title) from the label configs and instructions in this
package. Tasks carry the image URL Label Studio can open: a local dataset root is served
through a Local Files storage (the root must lie under the server's document root), an S3
root through an S3 storage with presigned URLs. A campaign's reference pictures
(``annotation_ui.references``) are copied under the root and served the same way: validation
and annotation tasks show the assigned gesture's picture, their instructions every class's.
Every submitted or skipped annotation comes back as a ``RawAnswer``; the screening step
decides what is usable.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Container
from pathlib import Path
from typing import Any

import pandas as pd

from annotation_ui import ls_client
from annotation_ui.configs import (
    DISAGREED,
    STAGES_WITH_REFERENCES,
    box_label_options,
    instructions,
    label_config,
    result_value,
)
from annotation_ui.references import (
    REFERENCES_PREFIX,
    ReferencePicturesError,
    read_references,
    reference_key,
)
from schemas.crowd import CrowdSettings, Queue, Stage
from schemas.taxonomy import DEFAULT_TAXONOMY, load_taxonomy
from tasks.annotate.boxes import parse_answer_json, to_labelstudio
from tasks.crowd.answers import RawAnswer, raw_frame
from tasks.crowd.backends import CrowdTask, PushedTask
from tasks.storage import LocalStorage, S3Storage, Storage, open_storage


class LabelStudioCrowd:
    """Pushes tasks into Label Studio projects and pulls their annotations."""

    name = "labelstudio"

    def __init__(self, *, url: str, token: str, root: Storage, prefix: str,
                 settings: CrowdSettings, document_root: Path | None = None,
                 s3_endpoint_url: str | None = None, taxonomy: str | None = None,
                 references: str | None = None) -> None:
        self.url = url.rstrip("/")
        # the gesture classes (reference pictures) and box labels; default: hagrid_v1
        self.taxonomy = load_taxonomy(taxonomy or DEFAULT_TAXONOMY)
        self.client = ls_client.connect(self.url, token)
        self.root = root
        self.prefix = prefix
        self.settings = settings
        self.document_root = document_root
        self.s3_endpoint_url = s3_endpoint_url
        self.references = references  # the campaign's folder of <gesture>.png/.jpg, or None
        self._projects: dict[tuple[Stage, Queue], int] = {}
        self._reference_keys: dict[str, str] | None = None

    def project_title(self, stage: Stage, queue: Queue) -> str:
        """``<prefix> validation`` / ``<prefix> validation review`` (3 to 50 characters)."""
        suffix = " review" if queue is Queue.REVIEW else ""
        return f"{self.prefix} {stage.value}{suffix}"[:50]

    def overlap(self, queue: Queue) -> int:
        """Answers Label Studio collects per task: ``overlap`` for the crowd, 1 for review."""
        return 1 if queue is Queue.REVIEW else self.settings.overlap

    def project(self, stage: Stage, queue: Queue) -> int:
        """The project of a stage's queue, created with its storage on first use.

        ``ReferencePicturesError`` before anything is created when the campaign's reference
        folder misses a class.
        """
        if (stage, queue) not in self._projects:
            shows = self.references is not None and stage in STAGES_WITH_REFERENCES
            keys = self.reference_keys() if shows else {}
            config = label_config(stage, review=queue is Queue.REVIEW, references=shows)
            pid = ls_client.ensure_project(self.client, title=self.project_title(stage, queue),
                                           label_config=config, instructions=None,
                                           overlap=self.overlap(queue))
            self._ensure_storage(pid, references=shows)
            urls = {g: self.page_url(pid, key) for g, key in keys.items()}
            ls_client.ensure_instructions(self.client, project_id=pid,
                                          instructions=instructions(stage, references=urls))
            self._projects[(stage, queue)] = pid
        return self._projects[(stage, queue)]

    def reference_keys(self) -> dict[str, str]:
        """gesture -> its reference picture under the dataset root, copied there from the
        campaign's folder (only what changed) on first use."""
        if self._reference_keys is None:
            assert self.references is not None
            folder = open_storage(self.references, endpoint_url=self.s3_endpoint_url)
            try:
                pictures = read_references(folder, gestures=self.taxonomy.gestures)
            except ReferencePicturesError as exc:
                raise ReferencePicturesError(f"{self.references}: {exc}") from None
            keys = {}
            for gesture, (suffix, data) in pictures.items():
                keys[gesture] = reference_key(gesture, suffix)
                if not self.root.exists(keys[gesture]) or self.root.read_bytes(
                        keys[gesture]) != data:
                    self.root.write_bytes(keys[gesture], data)
            self._reference_keys = keys
        return self._reference_keys

    def page_url(self, project_id: int, key: str) -> str:
        """A URL for a file under the root that works anywhere in the project's pages (the
        instructions), not only in task data."""
        url = self.image_url(key)
        return ls_client.project_file_url(project_id, url) if url.startswith("s3://") else url

    def _ensure_storage(self, project_id: int, *, references: bool) -> None:
        if isinstance(self.root, S3Storage):  # one storage resolves every key of the bucket
            prefix = f"{self.root.prefix}/objects".strip("/")
            ls_client.ensure_s3_storage(
                self.client, project_id=project_id, bucket=self.root.bucket, prefix=prefix,
                endpoint_url=self.s3_endpoint_url, access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                region=os.environ.get("AWS_DEFAULT_REGION"))
        elif isinstance(self.root, LocalStorage):
            folders = ["objects"] + ([REFERENCES_PREFIX] if references else [])
            for folder in folders:
                ls_client.ensure_local_storage(self.client, project_id=project_id,
                                               path=self._local_dir(folder))
        else:
            raise ValueError(f"Label Studio cannot open images of {self.root.uri}")  # noqa: TRY004 - a setup error, reported by the CLI

    def _local_dir(self, folder: str) -> Path:
        if self.document_root is None:
            raise ValueError("a local dataset root needs the server's document root "
                             "(--ls-document-root or LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
        path = (Path(self.root.uri) / folder).resolve()
        if not path.is_relative_to(self.document_root.resolve()):
            raise ValueError(f"the dataset root {self.root.uri} is not under Label Studio's "
                             f"document root {self.document_root}")
        return path

    def image_url(self, object_key: str) -> str:
        """The URL a task uses for an image: a local-files URL or ``s3://bucket/key``."""
        if isinstance(self.root, S3Storage):
            key = f"{self.root.prefix}/{object_key}".strip("/")
            return f"s3://{self.root.bucket}/{key}"
        assert self.document_root is not None
        path = (Path(self.root.uri) / object_key).resolve()
        return ls_client.local_file_url(self.document_root.resolve(), path)

    def push(self, stage: Stage, tasks: list[CrowdTask], *, batch_id: str) -> list[PushedTask]:
        """Import the tasks (one per image and round); tasks already there are reused."""
        by_queue: dict[Queue, list[CrowdTask]] = defaultdict(list)
        for t in tasks:
            by_queue[t.queue].append(t)
        pushed = []
        for queue, group in by_queue.items():
            pid = self.project(stage, queue)
            payload = [self.task_payload(stage, t) for t in group]
            ids = ls_client.import_tasks(self.client, project_id=pid, tasks=payload,
                                         key="task_key")
            pushed += [PushedTask(t.image_id, queue, t.round, self.overlap(queue),
                                  str(ids[f"{t.image_id}:r{t.round}"])) for t in group]
        return pushed

    def task_payload(self, stage: Stage, t: CrowdTask) -> dict[str, Any]:
        """What Label Studio imports for a task: the photo, the assigned gesture, its reference
        picture, the box labels (annotation), the review note and any pre-annotation."""
        task: dict[str, Any] = {"data": {
            "image": self.image_url(t.object_key), "image_id": t.image_id,
            "task_key": f"{t.image_id}:r{t.round}", "round": t.round, "gesture": t.gesture}}
        if self.references is not None and stage in STAGES_WITH_REFERENCES:
            task["data"]["reference"] = self.image_url(self._reference_of(t.gesture))
        if stage is Stage.ANNOTATION:  # the box labels, the assigned gesture's selected
            task["data"]["labels"] = box_label_options(self.taxonomy.box_labels,
                                                       assigned=t.gesture)
        if t.queue is Queue.REVIEW:  # shown by the review config: what the audit suspects
            task["data"]["note"] = t.note or DISAGREED
        if t.preannotation:
            pre = parse_answer_json(t.preannotation)
            result = to_labelstudio(pre.boxes, pre.leading_hand, width=t.width or 1,
                                    height=t.height or 1)
            task["predictions"] = [{"result": result, "model_version": "preannotation"}]
        return task

    def _reference_of(self, gesture: str) -> str:
        keys = self.reference_keys()
        if gesture not in keys:
            raise ReferencePicturesError(
                f"no reference picture for gesture {gesture!r}: it is not a class of "
                f"{self.taxonomy.name}")
        return keys[gesture]

    def pull(self, stage: Stage, *, recorded: Container[str] = frozenset()) -> pd.DataFrame:
        """Every annotation (submitted or skipped) of the stage's projects that exist, as a
        raw answer table (``recorded`` ones too: the caller drops them)."""
        out = []
        for queue in Queue:
            title = self.project_title(stage, queue)
            pid = self._projects.get((stage, queue)) or ls_client.project_id_by_title(
                self.client, title)
            if pid is None:
                continue
            for ann in ls_client.list_annotations(self.client, project_id=pid):
                out.append(self._raw(stage, queue, pid, ann))
        return raw_frame(out)

    def _raw(self, stage: Stage, queue: Queue, project_id: int, ann: dict[str, Any]) -> RawAnswer:
        return RawAnswer(
            answer_id=f"ls:{project_id}:{ann['annotation_id']}", stage=stage.value,
            queue=queue.value, image_id=ann.get("image_id"),
            worker_id=None if ann.get("completed_by") is None else f"ls:{ann['completed_by']}",
            value=result_value(stage, ann.get("result")), answered_at=_time(ann.get("created_at")),
            origin=f"labelstudio:{self.url}/projects/{project_id}",
            raw={k: v for k, v in ann.items() if k != "completed_by_email"},
            skipped=bool(ann.get("was_cancelled")))


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        return _time(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        return None
