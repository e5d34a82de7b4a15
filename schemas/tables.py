"""Parquet schemas of the catalog tables. Every record shape is declared here, once."""

from __future__ import annotations

import pyarrow as pa

# The submissions table a crowd platform hands over (CSV, JSONL or Parquet): one row per photo.
SUBMISSION_TABLE_REQUIRED: tuple[str, ...] = ("file", "user_id", "gesture")
SUBMISSION_TABLE_OPTIONAL: tuple[str, ...] = ("submitted_at",)

SUBMISSIONS = pa.schema(
    [
        pa.field("submission_id", pa.string(), nullable=False),  # stable identity of an input
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the source URI it came from
        pa.field("file", pa.string(), nullable=False),  # path relative to the source
        pa.field("row_index", pa.int64()),  # row in the submissions table; null: no row
        pa.field("user_id", pa.string()),  # RAW worker id: this table only
        pa.field("user_key", pa.string()),  # the pseudonymous id used everywhere else
        pa.field("gesture", pa.string()),
        pa.field("submitted_at", pa.string()),
        pa.field("sha256", pa.string()),  # null when the file could not be read
        pa.field("bytes", pa.int64()),
        pa.field("outcome", pa.string(), nullable=False),  # schemas.reasons.Outcome
        pa.field("reason", pa.string()),  # schemas.reasons.Reason, null when accepted
        pa.field("detail", pa.string()),  # a human-readable explanation of the reason
        pa.field("image_id", pa.string()),  # set when accepted
        pa.field("duplicate_of", pa.string()),  # the image_id that was kept, for duplicates
        pa.field("duplicate_distance", pa.int16()),  # phash Hamming distance to it
        pa.field("duplicate_similarity", pa.float32()),  # confirming check's score
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # UUID form of sha256[:32]
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("object_key", pa.string(), nullable=False),  # under the dataset root
        pa.field("format", pa.string(), nullable=False),  # JPEG / PNG / WEBP
        pa.field("width", pa.int32(), nullable=False),  # after EXIF orientation
        pa.field("height", pa.int32(), nullable=False),
        pa.field("orientation", pa.int8(), nullable=False),  # EXIF tag, 1 when absent
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),  # pseudonymous (salted hash)
        pa.field("gesture", pa.string(), nullable=False),
        pa.field("submitted_at", pa.string()),
        pa.field("submission_id", pa.string(), nullable=False),
        pa.field("phash", pa.uint64(), nullable=False),
        pa.field("phash_mirror", pa.uint64(), nullable=False),
        pa.field("thumb", pa.binary(), nullable=False),  # 16x16 grey, the confirming check
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

CATALOG_TABLES: dict[str, pa.Schema] = {"submissions": SUBMISSIONS, "images": IMAGES}

# Columns that describe a run rather than the data: ignored when comparing two catalogs.
RUN_COLUMNS = ("batch_id", "ingested_at")

# ---- crowd stages (validation, filtration) ---------------------------------------------

ANSWERS = pa.schema(
    [
        pa.field("answer_id", pa.string(), nullable=False),  # stable per origin: reruns skip it
        pa.field("stage", pa.string(), nullable=False),  # schemas.crowd.Stage
        pa.field("queue", pa.string(), nullable=False),  # schemas.crowd.Queue: crowd or review
        pa.field("image_id", pa.string()),  # as given; null when the answer named no image
        pa.field("worker_id", pa.string()),  # the crowd platform's annotator id, prefixed
        pa.field("answer", pa.string()),  # canonical answer (schemas.crowd), null if rejected
        pa.field("answered_at", pa.timestamp("us", tz="UTC")),
        pa.field("origin", pa.string(), nullable=False),  # labelstudio:..., file:..., simulated
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected
        pa.field("reason", pa.string()),  # schemas.crowd.AnswerReason when rejected
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string(), nullable=False),  # the answer as received, JSON
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

VERDICTS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),  # schemas.crowd.Verdict
        pa.field("reason", pa.string()),  # validation: why not; filtration: the flags, a,b
        pa.field("confidence", pa.float64(), nullable=False),
        pa.field("n_answers", pa.int32(), nullable=False),  # answers that were aggregated
        pa.field("method", pa.string(), nullable=False),  # mv, wmv, ds, ..., golden, review
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

STAGE_TASKS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("queue", pa.string(), nullable=False),  # crowd | review
        pa.field("round", pa.int32(), nullable=False),  # 1, then one more per re-queue
        pa.field("answers_wanted", pa.int32(), nullable=False),
        pa.field("is_golden", pa.bool_(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),  # labelstudio | file | simulated
        pa.field("external_id", pa.string()),  # the back end's task id (Label Studio task)
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("pushed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

GOLDEN = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # canonical answer, known to be right
        pa.field("source", pa.string(), nullable=False),  # where it came from (a file, expert)
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

CATALOG_TABLES.update(
    {"answers": ANSWERS, "verdicts": VERDICTS, "stage_tasks": STAGE_TASKS, "golden": GOLDEN}
)

# ---- annotation (boxes and leading hand) -----------------------------------------------

from schemas.annotation import BOXES

PREANNOTATIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # tasks.annotate.boxes.answer_json form
        pa.field("source", pa.string(), nullable=False),  # e.g. hagrid:<annotations file>
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

# Fields of an imported HaGRID entry that have no column in ``boxes`` (v2: hand_landmarks or
# landmarks, meta, united_bbox, united_label) and the split the source put the image in, for
# releases to carry. One row per image whose entry an import wrote; the latest row per
# image_id wins (``tasks.annotate.hagrid_import.latest_image_extras``). ``extras_json`` is a
# JSON object with sorted keys (``{}`` when the entry had none); its coordinates
# (``united_bbox``, landmarks) are relative to the upright image, like ``boxes``: turned from
# the stored pixels when the photo carries an EXIF orientation, as published otherwise.
IMAGE_EXTRAS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # e.g. hagrid:<annotations file>
        pa.field("source_split", pa.string()),  # as the source names it; null: no split folder
        pa.field("extras_json", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

CATALOG_TABLES.update({"boxes": BOXES, "preannotations": PREANNOTATIONS,
                       "image_extras": IMAGE_EXTRAS})

# ---- label audit (issue 14) ------------------------------------------------------------

# Labels a trained model finds likely wrong (``hagrid audit``): one row per flagged label of
# a release. ``head`` is ``gesture`` (a box's label: a gesture or no_gesture; ``box_index``
# is the box's index in the image's ``boxes``) or ``leading_hand`` (the image's leading hand,
# scored on its gesture box: ``box_index`` is that box). ``quality`` is cleanlab's label
# quality score of the given label (0 worst, 1 best), from out-of-fold predictions of models
# that never saw the person. An image is flagged at most once per release: a second audit of
# the same release adds no row for an image that has one. ``audit_id`` names the audit run.
LABEL_ISSUES = pa.schema(
    [
        pa.field("release", pa.string(), nullable=False),  # the release version, e.g. v1
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int16(), nullable=False),
        pa.field("head", pa.string(), nullable=False),  # gesture | leading_hand
        pa.field("given_label", pa.string(), nullable=False),
        pa.field("suggested_label", pa.string(), nullable=False),  # the model's most likely
        pa.field("quality", pa.float64(), nullable=False),
        pa.field("audit_id", pa.string(), nullable=False),
        pa.field("flagged_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

CATALOG_TABLES.update({"label_issues": LABEL_ISSUES})


# ROOT/cache/checked-objects.parquet: the seal of every stored object a publish read, matched
# to its sha256 and published unchanged (tasks/publish/checked_objects.py). A cache: one row
# per (object_key, orientation); ``rules`` names the publishing rules it was made under.
CHECKED_OBJECT_SEALS = pa.schema([
    ("object_key", pa.string()), ("orientation", pa.int16()), ("rules", pa.int16()),
    ("ino", pa.uint64()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("ctime_ns", pa.int64()),
])
