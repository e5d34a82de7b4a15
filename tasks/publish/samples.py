"""Sample images of a release with their published boxes and labels drawn: one strip per class.

The report shows them so that a defect of the data (boxes beside the hands, sideways pixels,
wrong labels) is seen at a glance. The pictures are decoded exactly as HaGRID's loaders do
(``Image.open(...).convert("RGB")``, no EXIF transpose), from the published bytes, and the
boxes are the manifest's: what a researcher's loader gets is what the strip shows.

Picks are deterministic (a hash of the image id per class), so the same release gives the
same strips; the PNGs carry no time.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from schemas.annotation import FREE_HAND_LABEL
from tasks.publish.remote import RemoteStaging

TILE = 320  # px: the long side of one sample
GESTURE_COLOUR = (230, 30, 30)  # HaGRID's annotators drew the gesture hand red
FREE_COLOUR = (30, 200, 60)  # and a free hand green

ReadImage = Callable[[Mapping[str, object]], bytes]


def pick_samples(manifest: pd.DataFrame, *, gestures: Sequence[str],
                 per_class: int = 4) -> dict[str, list[int]]:
    """gesture -> manifest row positions of up to ``per_class`` samples, in a stable order
    (sha256 of the image id), for each gesture of ``gestures`` that has images."""
    if manifest.empty:
        return {}
    order = manifest["image_id"].map(lambda i: hashlib.sha256(str(i).encode()).hexdigest())
    ranked = manifest.assign(_rank=order.to_numpy(), _pos=range(len(manifest)))
    picks: dict[str, list[int]] = {}
    for gesture in gestures:
        rows = ranked[ranked["gesture"] == gesture].sort_values("_rank")
        if len(rows):
            picks[gesture] = [int(p) for p in rows["_pos"].head(per_class)]
    return picks


def draw_sample(data: bytes, boxes: Sequence[Sequence[float]], labels: Sequence[str], *,
                leading_hand: str | None, tile: int = TILE) -> Image.Image:
    """The picture as a plain loader sees it, scaled to ``tile`` px on its long side, with
    each box (relative ``[x, y, w, h]``) and its label drawn; the leading hand in a corner."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    scale = tile / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    for (x, y, w, h), label in zip(boxes, labels, strict=True):
        colour = FREE_COLOUR if label == FREE_HAND_LABEL else GESTURE_COLOUR
        left, top = x * image.width, y * image.height
        draw.rectangle((left, top, left + w * image.width, top + h * image.height),
                       outline=colour, width=2)
        draw.text((left + 2, max(0.0, top - 15)), label, fill=colour, font=font,
                  stroke_width=2, stroke_fill=(255, 255, 255))
    draw.text((4, image.height - 18), f"leading: {leading_hand or 'unknown'}",
              fill=(0, 0, 0), font=font, stroke_width=2, stroke_fill=(255, 255, 255))
    return image


def write_sample_strips(manifest: pd.DataFrame, read_image: ReadImage, out_dir: Path, *,
                        gestures: Sequence[str], per_class: int = 4) -> list[tuple[str, str]]:
    """Write ``samples-<gesture>.png`` per class (up to ``per_class`` samples side by side);
    return ``(file name, caption)`` pairs in ``gestures`` order. ``read_image`` gets a
    manifest row (as a mapping) and returns the published image bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for gesture, positions in pick_samples(manifest, gestures=gestures,
                                           per_class=per_class).items():
        tiles = []
        for pos in positions:
            row = manifest.iloc[pos]
            tiles.append(draw_sample(read_image(row.to_dict()), list(row["boxes"]),
                                     list(row["labels"]), leading_hand=row["leading_hand"]))
        strip = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1),
                                  max(t.height for t in tiles)), (255, 255, 255))
        x = 0
        for t in tiles:
            strip.paste(t, (x, 0))
            x += t.width + 4
        name = f"samples-{_safe(gesture)}.png"
        strip.save(out_dir / name, format="PNG", optimize=True)
        captions = ", ".join(str(manifest.iloc[p]["split"]) for p in positions)
        written.append((name, f"{gesture} ({captions})"))
    return written


def shard_reader(release_dir: Path) -> ReadImage:
    """Read a manifest row's image bytes from the shards under ``release_dir`` (one seek)."""
    def read(row: Mapping[str, object]) -> bytes:
        with (release_dir / str(row["shard"])).open("rb") as f:
            f.seek(int(str(row["offset"])))
            return f.read(int(str(row["size"])))
    return read


def remote_shard_reader(remote: RemoteStaging) -> ReadImage:
    """Read a manifest row's image bytes from the shards staged under the root's prefix
    (one ranged GET)."""
    store = remote.storage()

    def read(row: Mapping[str, object]) -> bytes:
        return store.read_range(remote.key(str(row["shard"])), int(str(row["offset"])),
                                int(str(row["size"])))
    return read


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
