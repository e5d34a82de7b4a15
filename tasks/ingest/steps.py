"""The work of the ``ingest`` flow, as plain functions the flow calls on chunks of inputs.

Phase 1 (reading and inspecting chunks, on any worker) is ``tasks.ingest.reading``; this
module holds phase 2 (duplicate decisions, records, commits, in the flow's process).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

from schemas.reasons import DUPLICATE_REASONS, Outcome, Reason
from schemas.settings import IngestSettings
from schemas.tables import IMAGES, SUBMISSIONS
from tasks.catalog import Catalog, image_id_for, object_key, pseudonymize
from tasks.ingest.dedup import DedupItem, DuplicateDecision, KnownImages, decide_duplicates
from tasks.ingest.inspection import ImageFeatures, Rejection
from tasks.ingest.intake import PlannedInput
from tasks.ingest.reading import InspectedInput


def decide_window(inspected: Sequence[InspectedInput],
                  known: KnownImages) -> list[DuplicateDecision | None]:
    """Duplicate decisions for the in-spec inputs of a window (None for the others too)."""
    with threadpool_limits(limits=1, user_api="blas"):  # see DECIDE_THREADS_NOTE
        return _decide_window(inspected, known)


# DECIDE_THREADS_NOTE: the confirming check multiplies many small matrices. With BLAS's own
# threads, while the inspection processes keep every core busy, those threads spin against
# them: 1,000 decisions took 8 s instead of 0.5 s on 2 cores (bench/RESULTS.md, issue 15).


def _decide_window(inspected: Sequence[InspectedInput],
                   known: KnownImages) -> list[DuplicateDecision | None]:
    positions = [i for i, x in enumerate(inspected) if isinstance(x.result, ImageFeatures)]
    feats = [cast(ImageFeatures, inspected[i].result) for i in positions]
    items = [DedupItem(f.sha256, f.phash, f.phash_mirror, f.thumb) for f in feats]
    ids = [image_id_for(f.sha256) for f in feats]
    decided = decide_duplicates(items, known, new_ids=ids)
    out: list[DuplicateDecision | None] = [None] * len(inspected)
    for pos, decision in zip(positions, decided):
        out[pos] = decision
    return out


PSEUDONYMOUS_ID = re.compile(r"[0-9a-fA-F]{32,128}")  # a hex hash: md5 to sha512 (HaGRID's)


def user_keys(user_ids: Sequence[str | None], *, salt: str,
              keep_pseudonymous: bool = False) -> list[str | None]:
    """The ``user_key`` of each worker id: its salted hash (``pseudonymize``), or, with
    ``keep_pseudonymous``, the id itself when it is already a hex hash (``PSEUDONYMOUS_ID``,
    e.g. a published dataset's subject ids)."""
    keys = pseudonymize(user_ids, salt=salt)
    if not keep_pseudonymous:
        return keys
    return [u if u is not None and PSEUDONYMOUS_ID.fullmatch(u) else k
            for u, k in zip(user_ids, keys, strict=True)]


def build_records(inspected: Sequence[InspectedInput], decisions: Sequence[DuplicateDecision | None],
                  *, source: str, batch_id: str, salt: str, now: dt.datetime,
                  keep_user_ids: bool = False) -> tuple[pa.Table, pa.Table]:
    """The ``submissions`` rows (every input) and ``images`` rows (accepted) of a window.

    ``keep_user_ids``: ids that are already hex hashes become the ``user_key`` as they are
    (``user_keys``); otherwise every id is hashed with ``salt``.
    """
    subs: list[dict] = []
    images: list[dict] = []
    keys = user_keys([x.planned.user_id for x in inspected], salt=salt,
                     keep_pseudonymous=keep_user_ids)
    for x, decision, user_key in zip(inspected, decisions, keys):
        p, r = x.planned, x.result
        row: dict[str, Any] = {
            "submission_id": p.submission_id, "batch_id": batch_id, "source": source,
            "file": p.file, "row_index": p.row_index, "user_id": p.user_id,
            "user_key": user_key, "gesture": p.gesture, "submitted_at": p.submitted_at,
            "sha256": r.sha256, "bytes": r.bytes, "ingested_at": now, "image_id": None,
            "duplicate_of": None, "duplicate_distance": None, "duplicate_similarity": None,
        }
        if isinstance(r, Rejection):
            row.update(outcome=Outcome.REJECTED.value, reason=r.reason.value, detail=r.detail)
        elif decision is not None:
            row.update(outcome=Outcome.REJECTED.value, reason=decision.reason.value,
                       detail=f"{decision.reason.value} of {decision.duplicate_of}",
                       duplicate_of=decision.duplicate_of,
                       duplicate_distance=decision.distance,
                       duplicate_similarity=decision.similarity)
        else:
            image_id = image_id_for(r.sha256)
            row.update(outcome=Outcome.ACCEPTED.value, reason=None, detail=None, image_id=image_id)
            images.append(_image_row(r, p, image_id=image_id, user_key=user_key,
                                     batch_id=batch_id, now=now))
        subs.append(row)
    return (pa.Table.from_pylist(subs, schema=SUBMISSIONS),
            pa.Table.from_pylist(images, schema=IMAGES))


def _image_row(f: ImageFeatures, p: PlannedInput, *, image_id: str, user_key: str | None,
               batch_id: str, now: dt.datetime) -> dict:
    return {
        "image_id": image_id, "sha256": f.sha256, "object_key": object_key(f.sha256, f.format),
        "format": f.format, "width": f.width, "height": f.height, "orientation": f.orientation,
        "bytes": f.bytes, "user_id": user_key, "gesture": p.gesture,
        "submitted_at": p.submitted_at, "submission_id": p.submission_id, "phash": f.phash,
        "phash_mirror": f.phash_mirror, "thumb": f.thumb, "batch_id": batch_id,
        "ingested_at": now,
    }


def commit_window(catalog: Catalog, *, batch_id: str, submissions: pa.Table, images: pa.Table,
                  inspected: Sequence[InspectedInput],
                  decisions: Sequence[DuplicateDecision | None]) -> None:
    """Drop stored bytes of rejected near duplicates, then write and commit the batch.

    Only near and mirrored duplicates are dropped: an exact duplicate's bytes are the kept
    image's bytes, and a near duplicate's sha256 is never accepted (else it would be exact).
    """
    for x, decision in zip(inspected, decisions):
        r = x.result
        if decision is not None and decision.reason is not Reason.EXACT_DUPLICATE:
            assert isinstance(r, ImageFeatures)
            catalog.root.delete(object_key(r.sha256, r.format))
    catalog.root.sync()  # every object of the batch is on disk before the batch is visible
    counts = Counter(submissions.column("outcome").to_pylist())
    catalog.write_batch(batch_id, {"images": images, "submissions": submissions},
                        info={"rows": submissions.num_rows, **counts})


def load_known_images(catalog: Catalog, *, settings: IngestSettings) -> KnownImages:
    """The catalog's accepted images, indexed for duplicate search."""
    t = catalog.read_table("images", columns=["image_id", "sha256", "phash", "thumb"])
    ids, shas = t.column("image_id").to_pylist(), t.column("sha256").to_pylist()
    phash = t.column("phash").to_numpy().astype(np.uint64)
    thumbs = t.column("thumb").to_pylist()
    del t  # the Arrow copy goes before the indexes are built (peak memory, issue 15)
    pa.default_memory_pool().release_unused()
    return KnownImages.from_catalog(ids=ids, shas=shas, phash=phash, thumbs=thumbs,
                                    settings=settings.dedup)


def seen_submission_ids(catalog: Catalog) -> set[str]:
    """Ids of every input already recorded: a rerun skips them."""
    return set(catalog.read_table("submissions", columns=["submission_id"])
               .column("submission_id").to_pylist())


def is_duplicate_reason(reason: str | None) -> bool:
    """True for the three duplicate reasons."""
    return reason is not None and Reason(reason) in DUPLICATE_REASONS
