"""Phase 1 of ingest, on any worker: read, check, hash and store a chunk of inputs.

Imports only what reading and inspection need (no hash index, no numba), so a worker process
starts fast (``flows.cluster`` preloads this module in its fork server).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.reasons import Reason
from schemas.settings import IngestSettings
from tasks.catalog import object_key
from tasks.ingest.inspection import ImageFeatures, Rejection, inspect_image, sha256_hex
from tasks.ingest.intake import PlannedInput
from tasks.storage import (
    InputRefused,
    NotRegularFileError,
    OutsideSourceError,
    Storage,
    TooLargeError,
)


@dataclass(frozen=True)
class InspectedInput:
    """One input after reading and checking: features when in spec, else a rejection."""

    planned: PlannedInput
    result: ImageFeatures | Rejection


def inspect_one(source: Storage, root: Storage, item: PlannedInput,
                *, settings: IngestSettings) -> InspectedInput:
    """Read the file once, hash and check it; store the bytes of an in-spec image."""
    if not item.needs_read:
        return InspectedInput(item, Rejection(item.reason or Reason.MISSING_FILE,
                                              item.detail or ""))
    try:
        data = source.read_input(item.file, max_bytes=settings.max_bytes)
    except FileNotFoundError:
        return InspectedInput(item, Rejection(Reason.MISSING_FILE, "file vanished from source"))
    except InputRefused as exc:
        return InspectedInput(item, Rejection(refusal_reason(exc), str(exc)))
    except Exception as exc:  # noqa: BLE001 - permissions, I/O, network errors after retries
        return InspectedInput(item, Rejection(Reason.UNREADABLE, f"cannot read: {exc}"))
    if item.reason is not None:  # bad metadata: record the bytes' identity, nothing more
        return InspectedInput(
            item, Rejection(item.reason, item.detail or "", sha256_hex(data), len(data))
        )
    result = inspect_image(data, formats=settings.formats, max_pixels=settings.max_pixels,
                           min_side=settings.min_side)
    if isinstance(result, ImageFeatures):
        key = object_key(result.sha256, result.format)
        if not root.exists(key):  # content-addressed: never rewritten
            root.write_bytes(key, data, durable=False)  # made durable by commit_window
    return InspectedInput(item, result)


def refusal_reason(exc: InputRefused) -> Reason:
    """The stored reason of an input the source adapter refused to read."""
    if isinstance(exc, OutsideSourceError):
        return Reason.OUTSIDE_SOURCE
    if isinstance(exc, TooLargeError):
        return Reason.TOO_LARGE
    assert isinstance(exc, NotRegularFileError), exc
    return Reason.NOT_REGULAR_FILE


def inspect_chunk(source: Storage, root: Storage, items: Sequence[PlannedInput],
                  *, settings: IngestSettings) -> list[InspectedInput]:
    """Inspect a chunk of inputs; one bad file never stops the others."""
    out = []
    for item in items:
        try:
            out.append(inspect_one(source, root, item, settings=settings))
        except Exception as exc:  # noqa: BLE001 - a bug or decoder crash: record it, go on
            failed = Rejection(Reason.UNREADABLE, f"inspection failed: {exc!r}")
            out.append(InspectedInput(item, failed))
    return out
