"""Stable snake_case codes for every way an input can be rejected at ingestion."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What ingestion did with one input."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Reason(StrEnum):
    """Why an input was rejected. Values are stored in the catalog: never rename one."""

    # table / source problems
    MISSING_FILE = "missing_file"  # a table row whose file is not in the source
    MISSING_METADATA = "missing_metadata"  # a file in the source with no table row
    INVALID_METADATA = "invalid_metadata"  # a row with an empty user_id or an unparsable field
    INVALID_PATH = "invalid_path"  # a row whose path escapes the source (absolute, ``..``)
    UNKNOWN_GESTURE = "unknown_gesture"  # the assigned gesture is not in the taxonomy
    OUTSIDE_SOURCE = "outside_source"  # a symlink whose target is outside the source: not read
    # file problems
    NOT_REGULAR_FILE = "not_regular_file"  # a FIFO, device, socket or folder: not read
    TOO_LARGE = "too_large"  # more bytes than the ingest size cap: not read past it
    UNREADABLE = "unreadable"  # could not be read, or the decoder failed (corrupt, truncated)
    EMPTY_FILE = "empty_file"  # zero bytes
    NOT_AN_IMAGE = "not_an_image"  # no image format recognised
    UNSUPPORTED_FORMAT = "unsupported_format"  # an image, but not JPEG / PNG / WebP
    DECOMPRESSION_BOMB = "decompression_bomb"  # declares more pixels than allowed
    TOO_SMALL = "too_small"  # short side below the minimum
    # duplicates (against the whole catalog and earlier rows of the batch)
    EXACT_DUPLICATE = "exact_duplicate"  # same sha256
    NEAR_DUPLICATE = "near_duplicate"  # perceptually the same photo
    MIRRORED_DUPLICATE = "mirrored_duplicate"  # perceptually the same photo, mirrored


DUPLICATE_REASONS = frozenset(
    {Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.MIRRORED_DUPLICATE}
)
