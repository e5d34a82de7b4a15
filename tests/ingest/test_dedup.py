"""Duplicate decisions on hand-made feature sets: first arrival wins, two checks must agree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from schemas.reasons import Reason
from schemas.settings import DedupSettings
from tasks.ingest.dedup import DedupItem, KnownImages, decide_duplicates
from tasks.ingest.inspection import ImageFeatures, centre_phash_bits, inspect_image, thumbs_array
from tests.photos import encode, textured_photo

RNG = np.random.default_rng(7)
THUMBS = [RNG.integers(0, 256, 1024, dtype=np.uint8) for _ in range(6)]


def _thumb(k: int, noise: float = 0.0, mirror: bool = False) -> bytes:
    t: np.ndarray = THUMBS[k].reshape(32, 32).astype(np.float32)
    t = t + np.random.default_rng(k + 100).normal(0, noise, t.shape)
    if mirror:
        t = t[:, ::-1]
    return np.clip(t, 0, 255).astype(np.uint8).tobytes()


def _mirror_code(code: int) -> int:
    return code ^ 0xFFFF_0000_0000_0000


def _item(sha: str, code: int, thumb: bytes, mirror: int | None = None) -> DedupItem:
    return DedupItem(sha, code, _mirror_code(code) if mirror is None else mirror, thumb)


def _empty() -> KnownImages:
    return KnownImages.from_catalog(ids=[], shas=[], phash=np.empty(0, np.uint64), thumbs=[],
                                    settings=DedupSettings())


def test_exact_and_near_duplicates_in_a_batch_point_at_the_first_arrival():
    items = [
        _item("a", 0x0F0F_0F0F_0F0F_0F0F, _thumb(0)),
        _item("b", 0x0F0F_0F0F_0F0F_0F0F ^ 0b1011, _thumb(0, noise=4)),  # near of a
        _item("a", 0x0F0F_0F0F_0F0F_0F0F, _thumb(0)),  # exact of a
        _item("c", 0x1234_5678_9ABC_DEF0, _thumb(1)),  # distinct
    ]
    out = decide_duplicates(items, _empty(), new_ids=["A", "B", "A", "C"])
    assert out[0] is None and out[3] is None
    assert (out[1].reason, out[1].duplicate_of, out[1].distance) == (Reason.NEAR_DUPLICATE, "A", 3)
    assert (out[2].reason, out[2].duplicate_of) == (Reason.EXACT_DUPLICATE, "A")


def test_hash_neighbours_that_the_second_check_rejects_stay_distinct():
    code = 0x0F0F_0F0F_0F0F_0F0F
    items = [_item("a", code, _thumb(0)), _item("b", code ^ 0b1, _thumb(1))]
    assert decide_duplicates(items, _empty(), new_ids=["A", "B"]) == [None, None]


def test_mirrored_resubmission_against_the_catalog():
    code = 0x0123_4567_89AB_CDEF
    known = KnownImages.from_catalog(ids=["K"], shas=["k"], phash=np.array([code], np.uint64),
                                     thumbs=[_thumb(2)], settings=DedupSettings())
    mirrored = DedupItem("m", 0x7777_0000_7777_0000, code ^ 0b11, _thumb(2, noise=3, mirror=True))
    [decision] = decide_duplicates([mirrored], known, new_ids=["M"])
    assert decision is not None
    assert (decision.reason, decision.duplicate_of) == (Reason.MIRRORED_DUPLICATE, "K")


def test_a_duplicate_of_a_rejected_row_is_judged_against_accepted_images_only():
    code = 0x0F0F_0F0F_0F0F_0F0F
    items = [
        _item("a", code, _thumb(3)),
        _item("b", code ^ 0b1, _thumb(3, noise=3)),  # near of a: rejected
        _item("c", code ^ 0b11, _thumb(3, noise=3)),  # near of a too, not of b
    ]
    out = decide_duplicates(items, _empty(), new_ids=["A", "B", "C"])
    assert out[0] is None and out[1].duplicate_of == "A" and out[2].duplicate_of == "A"


def test_accepted_items_are_remembered_for_the_next_window():
    known = _empty()
    code = 0x00FF_00FF_00FF_00FF
    assert decide_duplicates([_item("a", code, _thumb(4))], known, new_ids=["A"]) == [None]
    [later] = decide_duplicates([_item("b", code ^ 0b100, _thumb(4, 3))], known, new_ids=["B"])
    assert later is not None and later.duplicate_of == "A"


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(5))))
def test_the_set_of_kept_images_is_one_per_cluster_whatever_the_order(order):
    base = [0x0F0F_0F0F_0F0F_0F0F, 0x3C3C_A5A5_5A5A_C3C3]
    pool = [("a", base[0], _thumb(0)), ("b", base[0] ^ 0b1, _thumb(0, 3)),
            ("c", base[0] ^ 0b10, _thumb(0, 3)), ("d", base[1], _thumb(5)),
            ("e", base[1] ^ 0b1000, _thumb(5, 3))]
    items = [_item(*pool[i]) for i in order]
    out = decide_duplicates(items, _empty(), new_ids=[pool[i][0] for i in order])
    kept = [pool[i][0] for i, d in zip(order, out) if d is None]
    first_of_cluster = [next(pool[i][0] for i in order if pool[i][1] in (b, b ^ 1, b ^ 2, b ^ 8))
                        for b in base]
    assert sorted(kept) == sorted(first_of_cluster)


# --------------------------------------------------------------------------- the crop path


def _photo_item(sha: str, im: Image.Image) -> DedupItem:
    feats = inspect_image(encode(im, quality=90))
    assert isinstance(feats, ImageFeatures)
    return DedupItem(sha, feats.phash, feats.phash_mirror, feats.thumb)


def _cropped_and_zoomed(im: Image.Image, fraction: float) -> Image.Image:
    w, h = im.size
    box = (round(w * fraction), round(h * fraction), w - round(w * fraction),
           h - round(h * fraction))
    return im.crop(box).resize((w, h), Image.Resampling.BICUBIC)


def _with_person(im: Image.Image, x: float) -> Image.Image:
    """The same room with someone small (far off) standing at ``x`` (a fraction of the width)."""
    out = im.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.ellipse((w * (x - 0.012), h * 0.44, w * (x + 0.012), h * 0.5), fill=(210, 160, 130))
    draw.rectangle((w * (x - 0.021), h * 0.5, w * (x + 0.021), h * 0.68), fill=(40, 60, 150))
    return out


def _catalog_of(item: DedupItem, *, crop_path: bool = True) -> KnownImages:
    """A catalog holding ``item``: as an old catalog stores it, with no centre hash."""
    return KnownImages.from_catalog(ids=["K"], shas=[item.sha256],
                                    phash=np.array([item.phash], np.uint64), thumbs=[item.thumb],
                                    settings=replace(DedupSettings(), crop_path=crop_path))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_copy_cropped_by_8_percent_per_side_and_zoomed_back_is_a_near_duplicate(seed):
    im = textured_photo(seed)
    original = _photo_item("o", im)
    crop = _photo_item("c", _cropped_and_zoomed(im, 0.08))
    [before] = decide_duplicates([crop], _catalog_of(original, crop_path=False), new_ids=["C"])
    assert before is None  # what the decision without the crop path misses
    [decision] = decide_duplicates([crop], _catalog_of(original), new_ids=["C"])
    assert decision is not None
    assert (decision.reason, decision.duplicate_of) == (Reason.NEAR_DUPLICATE, "K")


def test_the_crop_path_finds_the_original_after_its_cropped_copy_too():
    im = textured_photo(4)
    crop, original = _photo_item("c", _cropped_and_zoomed(im, 0.08)), _photo_item("o", im)
    out = decide_duplicates([crop, original], _empty(), new_ids=["C", "O"])
    assert out[0] is None and out[1] is not None and out[1].duplicate_of == "C"


def _cut(im: Image.Image, sides: tuple[float, float, float, float]) -> Image.Image:
    """``sides`` (left, top, right, bottom fractions) cut off, zoomed back to full size."""
    w, h = im.size
    left, top, right, bottom = sides
    box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
    return im.crop(box).resize((w, h), Image.Resampling.BICUBIC)


@pytest.mark.parametrize(("seed", "sides"), [(16, (0.049, 0.07, 0.066, 0.069)),
                                             (23, (0.057, 0.06, 0.048, 0.071)),
                                             (23, (0.069, 0.046, 0.051, 0.069))])
def test_a_wide_match_that_correlates_closely_may_disagree_a_little_more_locally(seed, sides):
    """Crops the wide search aligns at r >= 0.97 whose zoom blur leaves a local residual
    over 0.60: caught by the close tier, missed without it."""
    im = textured_photo(seed)
    original, crop = _photo_item("o", im), _photo_item("c", _cut(im, sides))
    without = replace(DedupSettings(), crop_close_similarity=1.01)  # the close tier off
    catalog = KnownImages.from_catalog(ids=["K"], shas=["o"],
                                       phash=np.array([original.phash], np.uint64),
                                       thumbs=[original.thumb], settings=without)
    assert decide_duplicates([crop], catalog, new_ids=["C"]) == [None]
    [decision] = decide_duplicates([crop], _catalog_of(original), new_ids=["C"])
    assert decision is not None and decision.duplicate_of == "K"
    assert decision.similarity >= DedupSettings().crop_close_similarity


@pytest.mark.parametrize("seed", [2, 3])
def test_the_same_room_with_another_person_is_not_a_duplicate_on_the_crop_path(seed):
    room = textured_photo(seed)
    first = _photo_item("a", _with_person(room, 0.3))
    other = _photo_item("b", _with_person(room, 0.7))
    centre = centre_phash_bits(thumbs_array([first.thumb, other.thumb]))
    distances = [(first.phash ^ other.phash).bit_count(),  # full hashes, then crop path
                 (first.phash ^ int(centre[1])).bit_count(),
                 (other.phash ^ int(centre[0])).bit_count()]
    assert max(distances) <= DedupSettings().radius  # candidates both ways: the check decides
    assert decide_duplicates([first, other], _empty(), new_ids=["A", "B"]) == [None, None]
