"""Tests for the synthetic crowd-batch generator (tasks/simulation/)."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.simulation.drawing import paint
from tasks.simulation.generator import PhotoJob, SynthSummary, generate_batch, run_photo_job
from tasks.simulation.people import HAGRID_V1_GESTURES, POSES, HandPlacement, hand_shapes
from tasks.simulation.photos import PhotoGeometry, encode_jpeg
from tasks.simulation.planning import plan_batch
from tasks.simulation.problems import (
    EXPECTED_REASON,
    PROBLEM_KINDS,
    RESUBMISSION_KINDS,
    Edit,
    edited_geometry,
)

N, SEED = 40, 7  # n=40 is the smallest batch with every planted kind


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """One FullHD batch with every planted kind."""
    return generate_batch(tmp_path_factory.mktemp("fullhd"), n=N, seed=SEED, workers=2)


@pytest.fixture(scope="module")
def truth(batch: SynthSummary) -> list[dict]:
    return [json.loads(line) for line in batch.truth_jsonl.read_text().splitlines()]


@pytest.fixture(scope="module")
def rows(batch: SynthSummary) -> list[dict[str, str]]:
    with batch.submissions_csv.open(newline="") as f:
        return list(csv.DictReader(f))


def _displayed(path: Path, *, mode: str = "RGB") -> Image.Image:
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert(mode)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- determinism ---------------------------------------------------------------------------------


def test_same_arguments_write_identical_bytes_whatever_the_workers(tmp_path: Path) -> None:
    generate_batch(tmp_path / "a", n=40, seed=3, size=(640, 360), workers=2)
    generate_batch(tmp_path / "b", n=40, seed=3, size=(640, 360), workers=1)
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)


def test_fullhd_photos_render_to_the_same_bytes_again(batch: SynthSummary, tmp_path: Path) -> None:
    plan = [p for p in plan_batch(n=N, seed=SEED) if p.kind == "original"][:3]
    for planned in plan:
        assert planned.photo is not None
        again = tmp_path / Path(planned.file).name
        run_photo_job(PhotoJob(planned.photo, again, planned.quality, planned.orientation))
        assert again.read_bytes() == (batch.out_dir / planned.file).read_bytes()


def test_another_seed_gives_another_batch() -> None:
    first = plan_batch(n=12, seed=1, problems=False)
    second = plan_batch(n=12, seed=2, problems=False)
    assert [p.photo for p in first] != [p.photo for p in second]


# -- table and truth -----------------------------------------------------------------------------


def test_table_columns_and_increasing_times(rows: list[dict[str, str]]) -> None:
    assert list(rows[0]) == ["file", "user_id", "gesture", "submitted_at"]
    stamps = [r["submitted_at"] for r in rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(r["user_id"].startswith("w") and len(r["user_id"]) == 6 for r in rows)


def test_table_and_truth_agree(batch: SynthSummary, truth: list[dict], rows: list[dict]) -> None:
    by_file = {t["file"]: t for t in truth}
    row_files = [r["file"] for r in rows]
    assert len(by_file) == len(truth) == len(rows) + 1  # + the file without a row
    for row in rows:
        record = by_file[row["file"]]
        assert (record["user_id"], record["gesture"]) == (row["user_id"], row["gesture"])
        exists = (batch.out_dir / row["file"]).is_file()
        assert exists == (record["kind"] != "missing_file")
    (orphan,) = [t for t in truth if t["kind"] == "no_row"]
    assert orphan["file"] not in row_files and (batch.out_dir / orphan["file"]).is_file()
    assert orphan["user_id"] is None and orphan["gesture"] is None
    on_disk = {p.relative_to(batch.out_dir).as_posix() for p in batch.photos_dir.iterdir()}
    assert on_disk == {t["file"] for t in truth if t["kind"] != "missing_file"}
    assert batch.n_files == len(on_disk) and batch.n_rows == len(rows)


def test_every_kind_is_planted_with_its_expected_reason(truth: list[dict]) -> None:
    kinds = [t["kind"] for t in truth]
    assert set(kinds) == {"original", *RESUBMISSION_KINDS, *PROBLEM_KINDS}
    assert kinds.count("original") == N
    for t in truth:
        assert t["expected_reason"] == EXPECTED_REASON[t["kind"]]
        assert t["expected_outcome"] == ("accepted" if t["kind"] == "original" else "rejected")


def test_resubmissions_come_after_their_original(truth: list[dict]) -> None:
    position = {t["file"]: i for i, t in enumerate(truth)}
    kind = {t["file"]: t["kind"] for t in truth}
    user = {t["file"]: t["user_id"] for t in truth}
    copies = [t for t in truth if t["kind"] in RESUBMISSION_KINDS]
    assert len(copies) >= len(RESUBMISSION_KINDS)
    for t in copies:
        source = t["duplicate_of_file"]
        assert kind[source] == "original" and position[source] < position[t["file"]]
        assert t["same_worker"] == (user[source] == t["user_id"])
    assert {t["same_worker"] for t in copies} == {True, False}
    assert all(t["duplicate_of_file"] is None for t in truth if t["kind"] not in RESUBMISSION_KINDS)


def test_file_names_do_not_reveal_the_kind(truth: list[dict]) -> None:
    for t in truth:
        stem = Path(t["file"]).stem
        assert stem.isdigit() and len(stem) == 6


# -- geometry ------------------------------------------------------------------------------------


def _valid(t: dict) -> bool:
    """An original that follows the mining rules (no drawn rule break)."""
    return t["kind"] == "original" and t["validation"] == "yes"


def test_boxes_are_relative_and_not_degenerate(truth: list[dict]) -> None:
    for t in truth:
        assert len(t["bboxes"]) == len(t["labels"])
        for x, y, w, h in t["bboxes"]:
            assert 0 <= x and 0 <= y and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
            if t["framing"] in (None, "normal"):
                assert w * t["width"] >= 8 and h * t["height"] >= 8
    for t in truth:
        if _valid(t):
            assert t["labels"][0] == t["gesture"] and set(t["labels"][1:]) <= {"no_gesture"}
            assert t["leading_hand"] in ("left", "right")


def test_hand_sizes_are_realistic(truth: list[dict]) -> None:
    widths = [t["bboxes"][0][2] for t in truth if _valid(t)]
    assert 0.015 <= min(widths) and max(widths) <= 0.25


def test_rule_breaks_are_drawn_and_answered(truth: list[dict]) -> None:
    """Validation's truth comes from what was drawn: another gesture, a hand cut by the frame,
    a person too far or too close; filtration's from drawn inscriptions and planted flags."""
    originals = [t for t in truth if t["kind"] == "original"]
    by_framing: dict[str, list[dict]] = {}
    for t in originals:
        by_framing.setdefault(t["framing"], []).append(t)
    for t in by_framing.get("too_far", []):
        assert t["bboxes"][0][2] < 0.015 and t["validation"] == "no:bad_distance"
    for t in by_framing.get("too_close", []):
        assert max(t["bboxes"][0][2] * t["width"], t["bboxes"][0][3] * t["height"]) >= \
            0.3 * min(t["width"], t["height"])
        assert t["validation"] == "no:bad_distance"
    for t in by_framing.get("hand_cut_off", []):
        x, y, w, _h = t["bboxes"][0]
        assert min(x, y) <= 1e-6 or x + w >= 1 - 1e-6  # the hand touches the frame's edge
        assert t["validation"] == "no:hand_cut_off"
    for t in originals:
        wrong = t["validation"] == "no:wrong_gesture"
        assert (t["shown_gesture"] != t["gesture"]) == wrong
        if wrong:
            assert t["labels"][0] == t["shown_gesture"]
        assert ("text" in t["filtration"].split(",")) == (t["inscription"] is not None)
        assert set(t["planted_flags"]) <= {"child", "nudity"}
        assert set(t["planted_flags"]) <= set(t["filtration"].split(","))
    breaks = [t for t in originals if t["validation"] != "yes"]
    assert 0.04 <= len(breaks) / len(originals) <= 0.25
    assert any(t["inscription"] for t in originals)


def test_images_display_at_the_recorded_size(batch: SynthSummary, truth: list[dict]) -> None:
    tagged = 0
    for t in truth:
        if t["width"] is None or t["kind"] == "decompression_bomb":
            continue
        with Image.open(batch.out_dir / t["file"]) as opened:
            orientation = opened.getexif().get(0x0112, 1)
            tagged += orientation != 1
            shown = ImageOps.exif_transpose(opened)
            assert shown.size == (t["width"], t["height"])
            if orientation in (6, 8):
                assert opened.size == (t["height"], t["width"])
    assert tagged >= 1


def test_resized_copies_keep_a_short_side_of_720(truth: list[dict]) -> None:
    for t in truth:
        if t["kind"] == "resized":
            assert sorted((t["width"], t["height"])) in ([720, 1280], [900, 1600])


def test_exif_rotated_copy_shows_the_original(batch: SynthSummary, truth: list[dict]) -> None:
    (copy,) = [t for t in truth if t["kind"] == "exif_rotated"]
    shown = np.asarray(_displayed(batch.out_dir / copy["file"], mode="L"), np.float32)
    source = np.asarray(_displayed(batch.out_dir / copy["duplicate_of_file"], mode="L"), np.float32)
    assert np.abs(shown - source).mean() < 4


def test_mirrored_copy_flips_boxes_and_leading_hand(truth: list[dict]) -> None:
    by_file = {t["file"]: t for t in truth}
    (copy,) = [t for t in truth if t["kind"] == "mirrored"]
    source = by_file[copy["duplicate_of_file"]]
    for (x, y, w, h), (mx, my, mw, mh) in zip(source["bboxes"], copy["bboxes"], strict=True):
        assert mx == pytest.approx(1 - x - w, abs=1e-5) and (my, mw, mh) == (y, w, h)
    assert {copy["leading_hand"], source["leading_hand"]} == {"left", "right"}


def test_edits_transform_boxes() -> None:
    geometry = PhotoGeometry(1000, 500, ((0.1, 0.2, 0.3, 0.4),), ("like",), "right")
    cropped = edited_geometry(geometry, Edit("cropped", crop=(0.05, 0.0, 0.0, 0.04)))
    assert (cropped.width, cropped.height) == (950, 480)
    assert cropped.bboxes[0] == pytest.approx((50 / 950, 100 / 480, 300 / 950, 200 / 480), abs=1e-5)
    mirrored = edited_geometry(geometry, Edit("mirrored"))
    assert (
        mirrored.bboxes[0] == pytest.approx((0.6, 0.2, 0.3, 0.4))
        and mirrored.leading_hand == "left"
    )
    resized = edited_geometry(geometry, Edit("resized", scale=2 / 3))
    assert (resized.width, resized.height, resized.bboxes) == (667, 333, geometry.bboxes)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_round_trip(orientation: int) -> None:
    picture = Image.new("RGB", (64, 32), (200, 30, 30))
    picture.paste((30, 30, 200), (0, 0, 16, 16))  # top-left marker
    with Image.open(io.BytesIO(encode_jpeg(picture, quality=95, orientation=orientation))) as f:
        shown = np.asarray(ImageOps.exif_transpose(f))
    assert shown.shape[:2] == (32, 64) and shown[4, 4, 2] > 150 and shown[28, 60, 0] > 150


# -- planted problems ----------------------------------------------------------------------------


def _only(truth: list[dict], kind: str) -> dict:
    (record,) = [t for t in truth if t["kind"] == kind]
    return record


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_jpegs_do_not_decode(batch: SynthSummary, truth: list[dict], kind: str) -> None:
    path = batch.out_dir / _only(truth, kind)["file"]
    with pytest.raises((OSError, SyntaxError)), Image.open(path) as opened:
        opened.load()


def test_not_image_and_zero_byte(batch: SynthSummary, truth: list[dict]) -> None:
    with pytest.raises(UnidentifiedImageError):
        Image.open(batch.out_dir / _only(truth, "not_image")["file"])
    assert (batch.out_dir / _only(truth, "zero_byte")["file"]).stat().st_size == 0


def test_decompression_bomb_declares_huge_size(
    batch: SynthSummary, truth: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = batch.out_dir / _only(truth, "decompression_bomb")["file"]
    assert path.stat().st_size < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as opened:
        assert opened.format == "PNG" and opened.width * opened.height > 100_000_000


def test_too_small_and_unknown_gesture_are_real_photos(
    batch: SynthSummary, truth: list[dict]
) -> None:
    small = _only(truth, "too_small")
    assert _displayed(batch.out_dir / small["file"]).size == (640, 480)
    unknown = _only(truth, "unknown_gesture")
    assert unknown["gesture"] == "thumbs_sideways" and unknown["gesture"] not in HAGRID_V1_GESTURES
    assert _displayed(batch.out_dir / unknown["file"]).size == (unknown["width"], unknown["height"])


# -- pictures behave like photographs ------------------------------------------------------------


def test_textures_are_not_flat(batch: SynthSummary, truth: list[dict]) -> None:
    for t in [t for t in truth if t["kind"] == "original"][:8]:
        gray = np.asarray(_displayed(batch.out_dir / t["file"], mode="L"), np.float32)
        assert gray.std() > 15
        assert np.abs(np.diff(gray, axis=1)).mean() > 1.5  # fine grain and texture
        tiles = gray[: gray.shape[0] // 8 * 8, : gray.shape[1] // 8 * 8]
        blocks = tiles.reshape(8, tiles.shape[0] // 8, 8, -1).std(axis=(1, 3))
        assert (blocks > 2).all()  # no flat region anywhere


def test_scene_family_members_are_distinct_photos(batch: SynthSummary, truth: list[dict]) -> None:
    families: dict[int, list[str]] = {}
    for t in truth:
        if t["kind"] == "original":
            families.setdefault(t["scene_family"], []).append(t["file"])
    assert max(len(f) for f in families.values()) >= 2
    for files in families.values():
        thumbs = [np.asarray(_displayed(batch.out_dir / f, mode="L").resize((64, 64)), float)
                  for f in files]  # fmt: skip
        for a, b in itertools.combinations(thumbs, 2):
            assert np.abs(a - b).mean() > 6


def test_every_gesture_has_its_own_hand_shape() -> None:
    masks = {}
    for gesture in HAGRID_V1_GESTURES:
        pose = POSES[gesture]
        hand = HandPlacement((100.0, 100.0), 120.0, pose.rotation, False, 1, pose, gesture)
        canvas, cover = np.zeros((200, 200, 3), np.float32), np.zeros((200, 200), np.float32)
        for shape, _, counts in hand_shapes(hand):
            paint(canvas, shape, (1.0, 1.0, 1.0), coverage=cover if counts else None)
        masks[gesture] = cover > 0.5
    for a, b in itertools.combinations(HAGRID_V1_GESTURES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.92, (a, b)


# -- options -------------------------------------------------------------------------------------


def test_small_plain_batch_has_only_originals() -> None:
    plan = plan_batch(n=10, seed=5, dup_rate=0.0, problems=False, hard_negatives=False)
    assert [p.kind for p in plan] == ["original"] * 10
    assert len({p.scene_family for p in plan}) == 10


def test_hard_negative_families_share_a_room() -> None:
    plan = plan_batch(n=30, seed=5, problems=False, dup_rate=0.0)
    families: dict[int | None, list] = {}
    for p in plan:
        families.setdefault(p.scene_family, []).append(p.photo)
    assert all(2 <= len(f) <= 6 for f in families.values() if len(f) > 1)
    for specs in families.values():
        assert len({s.room for s in specs}) == 1 and len({s.camera for s in specs}) == len(specs)


def test_unknown_gesture_option_is_refused() -> None:
    with pytest.raises(ValueError, match="thumbs_sideways"):
        plan_batch(n=5, seed=1, gestures=("like", "thumbs_sideways"))


def test_refuses_to_mix_with_an_old_batch(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "old.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        generate_batch(tmp_path, n=2, seed=1)


# -- reference pictures --------------------------------------------------------------------------


def test_reference_pictures_one_per_class_the_same_bytes_every_time(tmp_path: Path) -> None:
    from annotation_ui.references import reference_files
    from schemas.taxonomy import load_taxonomy
    from tasks.simulation.references import draw_reference, write_references

    written = write_references(tmp_path / "a", size=64)
    write_references(tmp_path / "b", size=64)
    assert list(written) == list(HAGRID_V1_GESTURES)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    pictures = {g: _displayed(p) for g, p in written.items()}
    assert {(p.size, p.mode) for p in pictures.values()} == {((64, 64), "RGB")}
    assert len({p.tobytes() for p in pictures.values()}) == len(pictures)  # all different
    # a mirrored or turned gesture is not its plain twin
    assert pictures["peace"].tobytes() != pictures["peace_inverted"].tobytes()
    # it is a campaign folder the Label Studio back end accepts
    names = [p.name for p in (tmp_path / "a").iterdir()]
    assert set(reference_files(names, gestures=load_taxonomy().gestures)) == set(written)
    with pytest.raises(ValueError, match="hand_heart"):
        draw_reference("hand_heart")
