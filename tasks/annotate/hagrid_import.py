"""Importing a dataset in the published HaGRID layout: images through ingest, entries as
final annotations or as pre-annotations.

The layout (HaGRID README): ``DATASET_DIR/<gesture>/<image name>.jpg`` and one JSON file
per gesture, ``ANNOTATIONS_DIR/<gesture>.json`` or ``ANNOTATIONS_DIR/<split>/<gesture>.json``,
an object keyed by image name without extension. An entry has the v1 fields ``bboxes``,
``labels``, ``leading_hand``, ``leading_conf``, ``user_id``; later versions add
``united_bbox``, ``united_label``, ``hand_landmarks`` (or ``landmarks``) and ``meta``, and v2
entries have no ``leading_hand`` / ``leading_conf`` at all.

Steps (``import_hagrid``): read the layout and pair images with entries
(``read_hagrid_layout``); write a submissions table for the ``ingest`` flow and run it, so
checks and dedup apply as to any crowd batch; map each file to the image it became
(``ingest_outcomes``); plan what each image gets (``plan_import``); write one catalog batch
(``import_tables``, the ``image_extras`` table included) and the v2 extras file
(``extras_jsonl``).

Decisions:

- Nothing is dropped silently. Every image file of the dataset ends in exactly one
  ``FileStatus``; layout problems (an image without an entry, an entry without an image,
  an unknown gesture folder, a malformed annotations file or entry, ...) are listed with a
  reason. An image without an entry still goes through ingest (and later through every
  stage); it gets a per-image placeholder subject id, ``unknown:<file>``, so that it never
  shares a subject (and a split) with anyone else.
- Nothing outside the two folders is read. An annotations file that is a link leading out
  of ANNOTATIONS_DIR, a FIFO or device, or one over ``MAX_ANNOTATIONS_BYTES`` is a problem
  and is not read; JSON nested deeper than the parser can follow is a malformed file, and an
  entry nested over ``MAX_ENTRY_DEPTH`` levels a malformed entry. Images go through ingest,
  which refuses links leading out of DATASET_DIR (``outside_source``).
- Duplicates map to nothing. A file that ingest rejected as a duplicate does not pass its
  entry to the image kept: a near or mirrored duplicate's boxes are in another frame (a
  crop shifts them, a mirror swaps the leading hand), and the kept image has its own entry
  or goes through the annotation stage. Such files are counted under ``not_ingested``.
- Published HaGRID images already passed validation and filtration: an image whose entry
  is used gets a ``validation`` (accepted) and a ``filtration`` (clear) verdict, method
  ``import:hagrid``, unless it already has one in that stage. Mode ``accept`` also writes
  its ``boxes`` (one vote, agreement 1.0, the entry's ``leading_conf``) and an
  ``annotation`` verdict ``annotated``; mode ``preannotate`` writes a ``preannotations`` row
  (``answer_json`` of the entry), so the annotation stage asks annotators to correct it.
- An entry without a leading hand (the v2 format: no ``leading_hand``, no ``leading_conf``; or
  a null one) is used with the leading hand unknown: in mode ``accept`` its ``boxes`` rows
  have ``leading_hand`` and ``leading_conf`` null (so do the releases), in mode
  ``preannotate`` its pre-annotation says ``"leading_hand": null`` and the annotators choose
  it. A leading hand other than left or right still rejects the entry.
- An entry ``from_hagrid`` rejects becomes neither (reported with its reason); the image goes
  through every stage. In mode ``accept`` an entry of which a box was dropped (unknown
  label, far outside, degenerate) is rejected too, with that box's reason: a final
  annotation must not miss a hand. In mode ``preannotate`` the usable boxes are kept.
- The v2 extras have no column in ``boxes`` and are no part of a canonical answer. For each
  image whose entry is written, the catalog table ``image_extras`` (``schemas.tables
  .IMAGE_EXTRAS``) gets one row: the extra fields as one JSON object (``{}`` when none) and
  the source's own split (``train`` in ``ANNOTATIONS_DIR/train/like.json``; null without
  split folders), so that releases can carry them (``latest_image_extras`` reads it back).
  They also go to ``imports/<batch_id>/hagrid_extras.jsonl`` under the root (one line per
  image with extras: ``image_id``, ``file``, ``annotations_file`` and the extra fields as
  the source published them), written in the same catalog batch.
- Subject ids: ``user_id`` goes through ingest like any worker id, so the catalog keeps a
  salted hash of it (the root's salt): images of one subject still share one id, and splits
  stay subject-disjoint, but the values are not HaGRID's. ``keep_user_ids=True``
  (``--keep-user-ids``) keeps ids that are already pseudonymous (hex hashes, as HaGRID's
  are) as they are, so a release can be matched with HaGRID's own subjects; any other id
  (a placeholder ``unknown:<file>``) is still hashed. Ingest records an input once, so the
  choice made on the first import of a file sticks.
- EXIF orientation: HaGRID's boxes refer to the stored pixels (its loaders do not apply the
  orientation), while our boxes, width and height refer to the upright image. An imported
  image whose photo carries an orientation tag (``images.orientation`` other than 1) gets
  its boxes, and the coordinates of its extras (``united_bbox``, landmarks) in
  ``image_extras``, turned onto the upright image, and a mirroring orientation (2, 4, 5,
  7) swaps its leading hand, so that the boxes stay on the hands. Such images are counted
  (``orientation_tagged``) and logged as a warning. The extras file keeps the source's
  values as published.
- Idempotent: ingest skips inputs it has seen; images that already have boxes,
  pre-annotations or an ``annotation`` verdict are skipped (``already_imported``); a run
  with nothing to write commits no batch. The submissions table is stored content-addressed
  (``imports/hagrid-<digest>/submissions.parquet``), so a rerun writes no file either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.annotation import BOXES, FREE_HAND_LABEL, AnnotationSettings, BoxReason
from schemas.crowd import Stage, Verdict
from schemas.tables import IMAGE_EXTRAS, PREANNOTATIONS, VERDICTS
from schemas.taxonomy import Taxonomy
from tasks.annotate.boxes import (
    AnnotationError,
    Box,
    ParsedAnnotation,
    answer_json,
    from_hagrid,
    upright_annotation,
    upright_box,
    upright_point,
)
from tasks.annotate.consensus import AggregateBox, ImageAnnotation, box_rows
from tasks.catalog import Catalog
from tasks.ingest.intake import IMAGE_EXTENSIONS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from tasks.lock import writer_lock
from tasks.storage import LocalStorage, OutsideSourceError, Storage, open_storage

IMPORT_METHOD = "import:hagrid"  # verdicts.method and boxes.method of imported annotations
EXTRA_FIELDS = ("united_bbox", "united_label", "hand_landmarks", "landmarks", "meta")
UNKNOWN_SUBJECT = "unknown:"  # prefix of the placeholder subject id of an image without one
SAMPLE_PROBLEMS = 20
MAX_ANNOTATIONS_BYTES = 1 << 30  # per annotations file (HaGRID's largest are ~100 MB)
MAX_ENTRY_DEPTH = 16  # lists and objects in an entry; HaGRID's hand_landmarks nest 4

LOG = logging.getLogger(__name__)


class IngestFn(Protocol):
    """Runs the ingest flow on a submissions table; returns its summary."""

    def __call__(self, source: str, submissions: str, root: str, /, *,
                 keep_user_ids: bool) -> dict[str, Any]:
        """``source`` URI, ``submissions`` table URI, ``root`` URI; ``keep_user_ids``: keep
        already pseudonymous ids as the catalog's ``user_key`` instead of re-hashing them."""
        ...


class ImportMode(StrEnum):
    """What the entries become."""

    ACCEPT = "accept"  # final annotations: boxes and an annotation verdict
    PREANNOTATE = "preannotate"  # pre-annotations that annotators correct


class LayoutProblem(StrEnum):
    """Something off in the published layout. Reported, never fatal."""

    NO_ENTRY = "no_entry"  # an image without an annotation entry (ingested all the same)
    NO_IMAGE = "no_image"  # an entry without an image
    UNKNOWN_GESTURE_FOLDER = "unknown_gesture_folder"  # ingest rejects its images
    UNKNOWN_GESTURE_FILE = "unknown_gesture_file"  # an annotations file of no known gesture
    OUTSIDE_GESTURE_FOLDER = "outside_gesture_folder"  # an image not directly in a folder
    MALFORMED_FILE = "malformed_file"  # an annotations file that is not a JSON object
    OUTSIDE_FOLDER = "outside_folder"  # an annotations file linked from outside: not read
    UNREADABLE_FILE = "unreadable_file"  # not a regular file, too large, or an I/O error
    MALFORMED_ENTRY = "malformed_entry"  # an entry that is not a JSON object
    DUPLICATE_ENTRY = "duplicate_entry"  # one image in two annotations files: first kept
    MISSING_USER_ID = "missing_user_id"  # an entry without user_id: placeholder subject
    UNEXPECTED_FILE = "unexpected_file"  # neither an image nor an annotations file


class FileStatus(StrEnum):
    """What an import did with one image file of the dataset: each file gets exactly one."""

    ANNOTATED = "annotated"  # accept: final boxes written
    PREANNOTATED = "preannotated"  # preannotate: a pre-annotation written
    ALREADY_IMPORTED = "already_imported"  # had boxes, pre-annotations or an annotation verdict
    ENTRY_REJECTED = "entry_rejected"  # ingested, the entry unusable: every stage as usual
    NO_ENTRY = "no_entry"  # ingested, no entry: every stage as usual
    NOT_INGESTED = "not_ingested"  # rejected by ingest (duplicates included)


@dataclass(frozen=True)
class Problem:
    """One layout problem: its kind, where (a file, or ``<annotations file>#<name>``), why."""

    kind: LayoutProblem
    where: str
    detail: str


@dataclass(frozen=True)
class HagridImage:
    """An image file of the dataset and its entry as published (None: no entry)."""

    file: str  # key under DATASET_DIR
    gesture: str | None  # its folder; None when not directly in a gesture folder
    user_id: str  # the entry's subject id, else ``unknown:<file>``
    entry: Any = None  # a dict for a well-formed entry
    annotations_file: str | None = None  # key under ANNOTATIONS_DIR

    @property
    def extras(self) -> dict[str, Any]:
        """The v2 fields of the entry that are present (nulls included, as published)."""
        if not isinstance(self.entry, Mapping):
            return {}
        return {k: self.entry[k] for k in EXTRA_FIELDS if k in self.entry}

    @property
    def source_split(self) -> str | None:
        """The split folder of its annotations file (``train/like.json``: ``train``), if any."""
        parts = PurePosixPath(self.annotations_file or "").parts
        return parts[0] if len(parts) == 2 else None


@dataclass(frozen=True)
class HagridLayout:
    """The images of a dataset paired with their entries, and every problem found."""

    images: tuple[HagridImage, ...]
    problems: tuple[Problem, ...]
    n_entries: int  # entries read, duplicates and entries without images included

    def submissions_table(self) -> pa.Table:
        """The ingest table: one row per image in a gesture folder (file, user_id, gesture).

        Images outside a gesture folder are left out: ingest records them as
        ``missing_metadata`` (a file without a row).
        """
        rows = [{"file": i.file, "user_id": i.user_id, "gesture": i.gesture,
                 "submitted_at": None} for i in self.images if i.gesture is not None]
        return pa.table({c: pa.array([r[c] for r in rows], pa.string())
                         for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS})

    def problem_counts(self) -> dict[str, int]:
        """Problems per kind."""
        return dict(sorted(Counter(p.kind.value for p in self.problems).items()))


# ---- reading the layout -----------------------------------------------------------------

def read_hagrid_layout(dataset_dir: Path, annotations_dir: Path, *,
                       taxonomy: Taxonomy) -> HagridLayout:
    """List the dataset, read every annotations file, pair images with entries."""
    dataset, annotations = LocalStorage(dataset_dir), LocalStorage(annotations_dir)
    dataset.check()
    annotations.check()
    inside = _relative_to(annotations.path, dataset.path)
    keys = [k for k in dataset.list() if inside is None or not _under(k, inside)]
    files, unread = read_annotation_files(annotations)
    layout = pair_layout(keys, files, taxonomy=taxonomy)
    return replace(layout, problems=(*unread, *layout.problems))


def read_annotation_files(annotations: Storage) -> tuple[dict[str, bytes], list[Problem]]:
    """Every annotations file's bytes, and a problem for each one not read: a link that leads
    out of the folder, a FIFO or device, a file over ``MAX_ANNOTATIONS_BYTES``, an I/O error."""
    files: dict[str, bytes] = {}
    problems = []
    for key in annotations.list():
        try:
            files[key] = annotations.read_input(key, max_bytes=MAX_ANNOTATIONS_BYTES)
        except OutsideSourceError as exc:
            problems.append(Problem(LayoutProblem.OUTSIDE_FOLDER, key, str(exc)))
        except Exception as exc:  # noqa: BLE001 - refused or failed: a problem, never fatal
            problems.append(Problem(LayoutProblem.UNREADABLE_FILE, key, str(exc)))
    return files, problems


def _relative_to(path: Path, base: Path) -> str | None:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return None


def _under(key: str, folder: str) -> bool:
    return folder == "." or key == folder or key.startswith(folder + "/")


def pair_layout(image_keys: Iterable[str], annotation_files: Mapping[str, bytes], *,
                taxonomy: Taxonomy) -> HagridLayout:
    """Pair ``<gesture>/<name>.<ext>`` with entry ``name`` of ``[<split>/]<gesture>.json``."""
    entries, problems, n_entries = _index_entries(annotation_files, taxonomy=taxonomy)
    images = []
    for key in sorted(image_keys):
        if PurePosixPath(key.lower()).suffix not in IMAGE_EXTENSIONS:
            problems.append(Problem(LayoutProblem.UNEXPECTED_FILE, key, "not an image file"))
            continue
        images.append(_paired_image(key, entries, problems, taxonomy=taxonomy))
    for (gesture, name), (source, _entry) in sorted(entries.items()):
        problems.append(Problem(LayoutProblem.NO_IMAGE, f"{source}#{name}",
                                f"no image {gesture}/{name}.* in the dataset"))
    return HagridLayout(tuple(images), tuple(problems), n_entries)


EntryIndex = dict[tuple[str, str], tuple[str, Any]]  # (gesture, name) -> (file, entry)


def _index_entries(files: Mapping[str, bytes], *,
                   taxonomy: Taxonomy) -> tuple[EntryIndex, list[Problem], int]:
    index: EntryIndex = {}
    problems: list[Problem] = []
    n_entries = 0
    for key in sorted(files):
        path = PurePosixPath(key)
        if path.suffix.lower() != ".json" or len(path.parts) > 2:
            problems.append(Problem(LayoutProblem.UNEXPECTED_FILE, key,
                                    "not <gesture>.json or <split>/<gesture>.json"))
            continue
        gesture = path.stem
        if not taxonomy.is_gesture(gesture):
            problems.append(Problem(LayoutProblem.UNKNOWN_GESTURE_FILE, key,
                                    f"{gesture!r} is not in taxonomy {taxonomy.name}"))
        parsed = _parse_annotations_file(key, files[key], problems)
        n_entries += len(parsed)
        for name, entry in parsed.items():
            if (gesture, name) in index:
                problems.append(Problem(LayoutProblem.DUPLICATE_ENTRY, f"{key}#{name}",
                                        f"also in {index[gesture, name][0]}, which is kept"))
                continue
            index[gesture, name] = (key, entry)
    return index, problems, n_entries


def _parse_annotations_file(key: str, data: bytes, problems: list[Problem]) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        problems.append(Problem(LayoutProblem.MALFORMED_FILE, key, f"not JSON: {exc}"))
        return {}
    except RecursionError:
        problems.append(Problem(LayoutProblem.MALFORMED_FILE, key, "JSON nested too deeply"))
        return {}
    if not isinstance(obj, dict):
        problems.append(Problem(LayoutProblem.MALFORMED_FILE, key,
                                f"not an object keyed by image name: {type(obj).__name__}"))
        return {}
    return obj


def _paired_image(key: str, entries: EntryIndex, problems: list[Problem], *,
                  taxonomy: Taxonomy) -> HagridImage:
    """The image of ``key`` with its entry taken out of ``entries`` (problems appended)."""
    parts = PurePosixPath(key).parts
    placeholder = f"{UNKNOWN_SUBJECT}{key}"
    if len(parts) != 2:
        problems.append(Problem(LayoutProblem.OUTSIDE_GESTURE_FOLDER, key,
                                "not <gesture>/<name>: ingest records it without metadata"))
        return HagridImage(key, None, placeholder)
    gesture, name = parts[0], PurePosixPath(parts[1]).stem
    if not taxonomy.is_gesture(gesture):
        problems.append(Problem(LayoutProblem.UNKNOWN_GESTURE_FOLDER, key,
                                f"{gesture!r} is not in taxonomy {taxonomy.name}"))
    if (gesture, name) not in entries:
        problems.append(Problem(LayoutProblem.NO_ENTRY, key,
                                f"no entry {name!r} in {gesture}.json: ingested as "
                                f"subject {placeholder!r}, without annotation"))
        return HagridImage(key, gesture, placeholder)
    source, entry = entries.pop((gesture, name))
    user = entry.get("user_id") if isinstance(entry, dict) else None
    if not isinstance(entry, dict):
        problems.append(Problem(LayoutProblem.MALFORMED_ENTRY, f"{source}#{name}",
                                f"not an object: {type(entry).__name__}"))
    elif not isinstance(user, str) or not user.strip():
        problems.append(Problem(LayoutProblem.MISSING_USER_ID, f"{source}#{name}",
                                f"no user_id: ingested as subject {placeholder!r}"))
    subject = user.strip() if isinstance(user, str) and user.strip() else placeholder
    return HagridImage(key, gesture, subject, entry, source)


# ---- after ingest: what each file became, and what each image gets ---------------------

@dataclass(frozen=True)
class IngestOutcome:
    """What ingest made of one file: the accepted image, or the reason it was rejected."""

    outcome: str  # schemas.reasons.Outcome
    reason: str | None
    image_id: str | None  # set when accepted
    duplicate_of: str | None = None


def ingest_outcomes(rows: Iterable[Mapping[str, Any]], *,
                    source: str) -> dict[str, IngestOutcome]:
    """Per file of ``source``: its accepted ``submissions`` row if any, else its latest row."""
    ordered = sorted((r for r in rows if r["source"] == source),
                     key=lambda r: (r["outcome"] == "accepted", r["ingested_at"]))
    return {r["file"]: IngestOutcome(r["outcome"], r["reason"], r["image_id"],
                                     r["duplicate_of"]) for r in ordered}


@dataclass(frozen=True)
class ImportedEntry:
    """An entry that will be written for an ingested image.

    ``answer`` is on the upright image (turned from the stored pixels when ``orientation``
    is not 1); ``extras`` are as the source published them.
    """

    image_id: str
    file: str
    annotations_file: str
    answer: ParsedAnnotation
    leading_conf: float | None  # None when the leading hand is unknown
    extras: dict[str, Any]
    source_split: str | None = None
    orientation: int = 1  # the photo's EXIF orientation (images.orientation)


@dataclass(frozen=True)
class ImportPlan:
    """Per image file its status; the entries to write; why the others were not used."""

    mode: ImportMode
    statuses: dict[str, FileStatus]
    entries: tuple[ImportedEntry, ...]
    entry_rejected: dict[str, str] = field(default_factory=dict)  # file -> reason
    not_ingested: dict[str, str] = field(default_factory=dict)  # file -> ingest reason


def plan_import(layout: HagridLayout, outcomes: Mapping[str, IngestOutcome], *,
                mode: ImportMode, done: AbstractSet[str], labels: AbstractSet[str],
                settings: AnnotationSettings | None = None,
                orientations: Mapping[str, int] | None = None) -> ImportPlan:
    """What every image gets. ``done``: images that already have an annotation of any kind.

    ``orientations``: image_id -> EXIF orientation (missing: 1); an entry of a tagged photo
    is turned onto the upright image (``upright_annotation``).
    """
    orientations = orientations or {}
    statuses: dict[str, FileStatus] = {}
    entries, rejected, not_ingested = [], {}, {}
    for image in layout.images:
        out = outcomes.get(image.file)
        if out is None or out.image_id is None:
            statuses[image.file] = FileStatus.NOT_INGESTED
            not_ingested[image.file] = (out.reason if out else None) or "not_recorded"
        elif image.entry is None:
            statuses[image.file] = FileStatus.NO_ENTRY
        elif out.image_id in done:
            statuses[image.file] = FileStatus.ALREADY_IMPORTED
        else:
            try:
                answer, conf = parse_entry(image.entry, mode=mode, labels=labels,
                                           settings=settings)
            except AnnotationError as exc:
                statuses[image.file] = FileStatus.ENTRY_REJECTED
                rejected[image.file] = exc.reason.value
                continue
            statuses[image.file] = (FileStatus.ANNOTATED if mode is ImportMode.ACCEPT
                                    else FileStatus.PREANNOTATED)
            turn = orientations.get(out.image_id, 1)
            entries.append(ImportedEntry(out.image_id, image.file, str(image.annotations_file),
                                         upright_annotation(answer, turn), conf, image.extras,
                                         image.source_split, turn))
    return ImportPlan(mode, statuses, tuple(entries), rejected, not_ingested)


def parse_entry(entry: Any, *, mode: ImportMode, labels: AbstractSet[str],
                settings: AnnotationSettings | None = None,
                ) -> tuple[ParsedAnnotation, float | None]:
    """The checked answer of an entry and its ``leading_conf``; ``AnnotationError``.

    In mode ``accept`` an entry that lost a box in the checks is rejected with that reason.
    An entry without a leading hand (v2) has it unknown: the answer's is None, and so is
    ``leading_conf`` (whatever the entry says). A missing ``leading_conf`` is 1.0.
    """
    if not isinstance(entry, Mapping):
        raise AnnotationError(BoxReason.MALFORMED, "the entry is not an object")
    if nested_deeper(entry, MAX_ENTRY_DEPTH):  # its extras would not serialise back
        raise AnnotationError(BoxReason.MALFORMED, f"nested over {MAX_ENTRY_DEPTH} levels")
    answer = from_hagrid(entry, labels=labels, settings=settings, require_leading_hand=False)
    if mode is ImportMode.ACCEPT and answer.problems:
        first = answer.problems[0]
        raise AnnotationError(first.reason, f"box {first.index} dropped ({first.detail}): "
                                            "a final annotation must keep every hand")
    if answer.leading_hand is None:
        return answer, None
    conf = entry.get("leading_conf", 1.0)
    conf = 1.0 if conf is None else conf
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
        raise AnnotationError(BoxReason.MALFORMED, f"leading_conf not in [0, 1]: {conf!r}")
    return answer, float(conf)


def nested_deeper(value: Any, limit: int) -> bool:
    """True when lists and objects nest more than ``limit`` levels in ``value`` (no recursion:
    JSON that parsed near the stack's limit could not be walked or written back recursively)."""
    level = [value]
    for _ in range(limit):
        level = [v for x in level if isinstance(x, (list, dict))
                 for v in (x.values() if isinstance(x, dict) else x)]
    return any(isinstance(x, (list, dict)) for x in level)


def upright_extras(extras: Mapping[str, Any], orientation: int) -> dict[str, Any]:
    """The extras with their coordinates on the upright image, as the boxes: each
    ``[x, y, w, h]`` of ``united_bbox`` and each ``[x, y, ...]`` point of ``hand_landmarks``
    / ``landmarks``, at any depth of nesting; nulls and every other field as published."""
    out = dict(extras)
    if orientation == 1:
        return out
    if "united_bbox" in out:
        out["united_bbox"] = _turned(out["united_bbox"], size=4, orientation=orientation)
    for key in ("hand_landmarks", "landmarks"):
        if key in out:
            out[key] = _turned(out[key], size=2, orientation=orientation)
    return out


def _turned(value: Any, *, size: int, orientation: int) -> Any:
    """Boxes (``size`` 4) or points (``size`` 2: ``[x, y]`` or ``[x, y, z]``) in ``value``
    turned upright; anything else as it is. Depth is bounded by ``MAX_ENTRY_DEPTH``."""
    if not isinstance(value, list):
        return value
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if numbers and size == 4 and len(value) == 4:
        x, y, w, h = (float(v) for v in value)
        x1, y1, x2, y2 = upright_box(Box(x, y, w, h, ""), orientation).edges()
        return [x1, y1, x2 - x1, y2 - y1]
    if numbers and size == 2 and len(value) in (2, 3):
        return [*upright_point(value[0], value[1], orientation), *value[2:]]
    return [_turned(v, size=size, orientation=orientation) for v in value]


# ---- rows -------------------------------------------------------------------------------

def imported_annotation(entry: ImportedEntry) -> ImageAnnotation:
    """An entry as a one-annotator aggregate: gesture hands first, then free hands."""
    boxes = sorted(entry.answer.boxes,
                   key=lambda b: (b.label == FREE_HAND_LABEL, b.x, b.y, b.w, b.h, b.label))
    return ImageAnnotation(
        boxes=tuple(AggregateBox(b, 1.0, 1.0, ((IMPORT_METHOD, b),)) for b in boxes),
        leading_hand=entry.answer.leading_hand, leading_conf=entry.leading_conf,
        agreement=1.0, n_annotators=1, low_agreement=False, minority_hands=0)


def import_tables(plan: ImportPlan, *, has_verdict: Mapping[str, AbstractSet[str]],
                  batch_id: str, now: dt.datetime) -> dict[str, pa.Table]:
    """The catalog batch of a plan (only non-empty tables).

    ``has_verdict``: stage -> images that already have a verdict there (not written again).
    """
    stages = [(Stage.VALIDATION.value, Verdict.ACCEPTED.value),
              (Stage.FILTRATION.value, Verdict.CLEAR.value)]
    if plan.mode is ImportMode.ACCEPT:
        stages.append((Stage.ANNOTATION.value, Verdict.ANNOTATED.value))
    verdicts = [{"stage": stage, "image_id": e.image_id, "verdict": verdict, "reason": None,
                 "confidence": 1.0, "n_answers": 0, "method": IMPORT_METHOD,
                 "batch_id": batch_id, "decided_at": now}
                for e in plan.entries for stage, verdict in stages
                if e.image_id not in has_verdict.get(stage, ())]
    tables = {"verdicts": pa.Table.from_pylist(verdicts, schema=VERDICTS)}
    if plan.mode is ImportMode.ACCEPT:
        rows = [r for e in plan.entries for r in box_rows(
            e.image_id, imported_annotation(e), method=IMPORT_METHOD, batch_id=batch_id,
            decided_at=now)]
        tables["boxes"] = pa.Table.from_pylist(rows, schema=BOXES)
    else:
        rows = [{"image_id": e.image_id, "answer": answer_json(e.answer),
                 "source": f"hagrid:{e.annotations_file}", "batch_id": batch_id,
                 "added_at": now} for e in plan.entries]
        tables["preannotations"] = pa.Table.from_pylist(rows, schema=PREANNOTATIONS)
    tables["image_extras"] = pa.Table.from_pylist(
        [{"image_id": e.image_id, "source": f"hagrid:{e.annotations_file}",
          "source_split": e.source_split, "extras_json": extras_json(e), "recorded_at": now}
         for e in plan.entries], schema=IMAGE_EXTRAS)
    return {name: t for name, t in tables.items() if t.num_rows}


def extras_json(entry: ImportedEntry) -> str:
    """The ``image_extras.extras_json`` of an entry: its extras on the upright image, as one
    JSON object with sorted keys (``{}`` when it has none)."""
    return json.dumps(upright_extras(entry.extras, entry.orientation), sort_keys=True,
                      separators=(",", ":"))


def extras_jsonl(plan: ImportPlan) -> bytes:
    """One JSON line per written entry with v2 extras: image_id, file, source, the fields."""
    lines = [json.dumps({"image_id": e.image_id, "file": e.file,
                         "annotations_file": e.annotations_file, **e.extras}, sort_keys=True)
             for e in plan.entries if e.extras]
    return "".join(line + "\n" for line in lines).encode()


def table_bytes(table: pa.Table) -> tuple[str, bytes]:
    """A submissions table as Parquet, and a digest of its rows (names its import folder)."""
    rows = json.dumps(table.to_pylist(), sort_keys=True, separators=(",", ":"))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return hashlib.sha256(rows.encode()).hexdigest()[:16], buf.getvalue()


# ---- the import (I/O at the edges) ------------------------------------------------------

@dataclass(frozen=True)
class WrittenBatch:
    """What one import wrote after ingest."""

    batch_id: str | None  # None when there was nothing to write
    tables: dict[str, int]  # rows per catalog table
    extras_key: str | None
    extras: int


def import_hagrid(dataset_dir: Path, annotations_dir: Path, *, root: str, mode: ImportMode,
                  taxonomy: Taxonomy, ingest: IngestFn,
                  settings: AnnotationSettings | None = None,
                  s3_endpoint_url: str | None = None,
                  keep_user_ids: bool = False) -> dict[str, Any]:
    """Import a dataset in the published layout into ``root``; returns the summary.

    ``ingest(source, submissions_uri, root_uri, keep_user_ids=...)`` runs the ingest flow
    (injected so that the caller picks its options and progress display). ``user_id`` is
    re-hashed with the root's salt unless ``keep_user_ids`` (then ids that are already hex
    hashes are kept). Holds the root's writer lock throughout (``RootLocked`` when another
    run holds it; the ingest flow's own lock is re-entrant).
    """
    layout = read_hagrid_layout(dataset_dir, annotations_dir, taxonomy=taxonomy)
    store = open_storage(root, endpoint_url=s3_endpoint_url)
    with writer_lock(store, command="import-hagrid"):
        return _import_locked(layout, store, dataset_dir, annotations_dir, mode=mode,
                              taxonomy=taxonomy, ingest=ingest, settings=settings,
                              keep_user_ids=keep_user_ids)


def _import_locked(layout: HagridLayout, store: Storage, dataset_dir: Path,
                   annotations_dir: Path, *, mode: ImportMode, taxonomy: Taxonomy,
                   ingest: IngestFn, settings: AnnotationSettings | None,
                   keep_user_ids: bool) -> dict[str, Any]:
    table_key = write_submissions_table(store, layout.submissions_table())
    source = LocalStorage(dataset_dir).uri
    ingest_summary = ingest(source, f"{store.uri}/{table_key}", store.uri,
                            keep_user_ids=keep_user_ids)
    catalog = Catalog(store)
    plan = plan_import(layout, read_outcomes(catalog, source=source), mode=mode,
                       done=annotated_images(catalog), labels=set(taxonomy.box_labels),
                       settings=settings, orientations=read_orientations(catalog))
    warn_orientation_tagged(plan)
    written = write_import(catalog, plan)
    summary = import_summary(layout, plan, ingest_summary=ingest_summary, written=written)
    return {"dataset": source, "annotations": LocalStorage(annotations_dir).uri,
            "root": store.uri, "taxonomy": taxonomy.name, "submissions_table": table_key,
            "keep_user_ids": keep_user_ids, **summary}


def write_submissions_table(store: Storage, table: pa.Table) -> str:
    """Store the ingest table under ``imports/`` (content-addressed); returns its key."""
    digest, data = table_bytes(table)
    key = f"imports/hagrid-{digest}/submissions.parquet"
    if not store.exists(key):
        store.write_bytes(key, data)
    return key


def read_outcomes(catalog: Catalog, *, source: str) -> dict[str, IngestOutcome]:
    """``ingest_outcomes`` over the catalog's ``submissions`` table."""
    rows = catalog.read_table("submissions", columns=[
        "source", "file", "outcome", "reason", "image_id", "duplicate_of", "ingested_at"])
    return ingest_outcomes(rows.to_pylist(), source=source)


def read_orientations(catalog: Catalog) -> dict[str, int]:
    """image_id -> EXIF orientation of the catalog's images (1: none)."""
    rows = catalog.read_table("images", columns=["image_id", "orientation"]).to_pydict()
    return dict(zip(rows["image_id"], rows["orientation"], strict=True))


def orientation_tagged(plan: ImportPlan) -> list[ImportedEntry]:
    """The planned entries of photos with an EXIF orientation: their boxes were turned."""
    return [e for e in plan.entries if e.orientation != 1]


def warn_orientation_tagged(plan: ImportPlan) -> None:
    """Log a warning naming a few of the photos whose entries were turned upright."""
    tagged = orientation_tagged(plan)
    if tagged:
        sample = ", ".join(f"{e.file} ({e.orientation})" for e in tagged[:SAMPLE_PROBLEMS])
        LOG.warning("%d imported photos carry an EXIF orientation: their HaGRID boxes refer "
                    "to the stored pixels and were turned onto the upright image (mirroring "
                    "orientations also swap the leading hand): %s", len(tagged), sample)


def latest_image_extras(catalog: Catalog) -> pd.DataFrame:
    """The ``image_extras`` table, latest row per image_id: the ``IMAGE_EXTRAS`` columns, one
    row per image, by image_id; a null ``source_split`` is None."""
    frame = catalog.read_table("image_extras").to_pandas()
    frame = frame.sort_values("recorded_at", kind="stable")
    frame = frame.drop_duplicates("image_id", keep="last").sort_values("image_id")
    split = frame["source_split"].astype(object)
    frame["source_split"] = split.where(split.notna(), None)
    return frame[IMAGE_EXTRAS.names].reset_index(drop=True)


def annotated_images(catalog: Catalog) -> set[str]:
    """Images with boxes, pre-annotations or an annotation verdict."""
    done = set(catalog.read_table("boxes", columns=["image_id"]).column(0).to_pylist())
    done |= set(catalog.read_table("preannotations", columns=["image_id"]).column(0).to_pylist())
    return done | verdict_images(catalog).get(Stage.ANNOTATION.value, set())


def verdict_images(catalog: Catalog) -> dict[str, set[str]]:
    """Stage -> images with at least one verdict there."""
    out: dict[str, set[str]] = {}
    for row in catalog.read_table("verdicts", columns=["stage", "image_id"]).to_pylist():
        out.setdefault(row["stage"], set()).add(row["image_id"])
    return out


def write_import(catalog: Catalog, plan: ImportPlan) -> WrittenBatch:
    """The extras file, then the catalog batch (committed last); nothing when nothing to do."""
    now = dt.datetime.now(dt.UTC)
    batch_id = f"hagrid-import-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    tables = import_tables(plan, has_verdict=verdict_images(catalog), batch_id=batch_id,
                           now=now)
    if not tables:
        return WrittenBatch(None, {}, None, 0)
    extras = extras_jsonl(plan)
    extras_key = None
    if extras:
        extras_key = f"imports/{batch_id}/hagrid_extras.jsonl"
        catalog.root.write_bytes(extras_key, extras)
    catalog.write_batch(batch_id, tables, info={"kind": "import:hagrid", "mode": plan.mode.value})
    return WrittenBatch(batch_id, {k: t.num_rows for k, t in tables.items()}, extras_key,
                        extras.count(b"\n"))


# ---- summary ----------------------------------------------------------------------------

INGEST_KEYS = ("inputs", "skipped_already_seen", "accepted", "rejected", "reasons")


def import_summary(layout: HagridLayout, plan: ImportPlan, *, ingest_summary: Mapping[str, Any],
                   written: WrittenBatch) -> dict[str, Any]:
    """Counts of the import: every image file in ``files`` (one status each), and why."""
    statuses = Counter(s.value for s in plan.statuses.values())
    problems = layout.problem_counts()
    return {
        "mode": plan.mode.value,
        "images": len(layout.images), "entries": layout.n_entries,
        "ingest": {k: ingest_summary.get(k) for k in INGEST_KEYS},
        "files": {s.value: statuses.get(s.value, 0) for s in FileStatus},
        "annotations_accepted": statuses.get(FileStatus.ANNOTATED.value, 0),
        "preannotations_written": statuses.get(FileStatus.PREANNOTATED.value, 0),
        "entries_rejected": dict(sorted(Counter(plan.entry_rejected.values()).items())),
        "not_ingested": dict(sorted(Counter(plan.not_ingested.values()).items())),
        "entries_without_images": problems.get(LayoutProblem.NO_IMAGE.value, 0),
        "images_without_entries": problems.get(LayoutProblem.NO_ENTRY.value, 0),
        "boxes_dropped": dict(sorted(Counter(p.reason.value for e in plan.entries
                                             for p in e.answer.problems).items())),
        "boxes_clipped": sum(e.answer.clipped for e in plan.entries),
        "leading_hand_unknown": sum(e.answer.leading_hand is None for e in plan.entries),
        "orientation_tagged": len(orientation_tagged(plan)),
        "problems": problems,
        "sample_problems": [{"kind": p.kind.value, "where": p.where, "detail": p.detail}
                            for p in layout.problems[:SAMPLE_PROBLEMS]],
        "written": {"batch_id": written.batch_id, "rows": written.tables,
                    "extras_file": written.extras_key, "extras": written.extras},
    }


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The summary's counts as (label, count) rows for a terminal table, reasons indented."""
    ingest = summary["ingest"]
    rows = [("ingest: inputs", ingest["inputs"] or 0),
            ("ingest: already seen, skipped", ingest["skipped_already_seen"] or 0),
            ("ingest: accepted", ingest["accepted"] or 0),
            ("ingest: rejected", ingest["rejected"] or 0)]
    rows += [(f"  {reason}", n) for reason, n in (ingest["reasons"] or {}).items()]
    reasons = {FileStatus.NOT_INGESTED.value: summary["not_ingested"],
               FileStatus.ENTRY_REJECTED.value: summary["entries_rejected"]}
    for status, n in summary["files"].items():
        rows.append((f"files: {status}", n))
        rows += [(f"  {reason}", k) for reason, k in reasons.get(status, {}).items()]
    rows += [("annotations accepted", summary["annotations_accepted"]),
             ("pre-annotations written", summary["preannotations_written"])]
    rows += [(f"  boxes dropped: {r}", n) for r, n in summary["boxes_dropped"].items()]
    rows += [("  leading hand unknown (v2)", summary["leading_hand_unknown"]),
             ("  EXIF-oriented: boxes turned upright", summary["orientation_tagged"]),
             ("v2 extras kept", summary["written"]["extras"]),
             ("entries without images", summary["entries_without_images"]),
             ("images without entries", summary["images_without_entries"])]
    rows += [(f"problem: {kind}", n) for kind, n in summary["problems"].items()]
    return rows
