"""What an audit leaves for a person to look at: the flagged rows as CSV, and per given
label a strip of the flagged boxes' crops (PNG), under ``ROOT/audits/<V>-<audit_id>/``."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from PIL import Image

from tasks.audit.issues import Flags
from tasks.audit.release import ReleaseHands
from tasks.train.dataset import SampleError, ShardReader, crop_square

AUDITS = "audits"  # beside releases/ in a dataset root
ISSUES_CSV = "issues.csv"


def audit_folder(version: str, audit_id: str) -> str:
    """The audit's folder, relative to the dataset root."""
    return f"{AUDITS}/{version}-{audit_id}"


def csv_bytes(table: pa.Table) -> bytes:
    """A table as CSV with a header line."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()


def strip_name(head: str, label: str) -> str:
    """File name of the strip of one head's flags of a given label."""
    return f"{head}-{label}.png"


def flag_strips(data: ReleaseHands, flags: Flags, *, size: int = 64, per_strip: int = 16,
                endpoint_url: str | None = None) -> dict[str, bytes]:
    """``{file name: PNG}``: per head and given label, the crops (scale 1, ``size`` px) of
    its first ``per_strip`` flags side by side, worst first. A picture that cannot be read
    is left black."""
    reader = ShardReader(data.uri, endpoint_url=endpoint_url)
    strips: dict[str, bytes] = {}
    try:
        for head, label in sorted(set(zip(flags.head.tolist(), flags.given.tolist(),
                                          strict=True))):
            rows = flags.row[(flags.head == head) & (flags.given == label)][:per_strip]
            strip = Image.new("RGB", (size * len(rows), size))
            for i, row in enumerate(rows.tolist()):
                strip.paste(Image.fromarray(_crop(data, reader, row, size=size)), (i * size, 0))
            buf = io.BytesIO()
            strip.save(buf, format="PNG")
            strips[strip_name(head, label)] = buf.getvalue()
    finally:
        reader.close()
    return strips


def _crop(data: ReleaseHands, reader: ShardReader, row: int, *, size: int) -> np.ndarray:
    h = data.hands
    try:
        picture = reader.read(h.shards[h.shard[row]], int(h.offset[row]), int(h.size[row]))
        return crop_square(picture, h.box[row], scale=1.0, size=size)
    except (OSError, EOFError, ValueError, SampleError):
        return np.zeros((size, size, 3), dtype=np.uint8)
