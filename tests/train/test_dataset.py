"""The release dataset: reads by shard offset (the bytes webdataset reads), one shard served
to several workers, HaGRID's crops and box choice, both views read into the same hands."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from tasks.train.dataset import (
    HandCrops,
    Sampling,
    ShardReader,
    adjust_colors,
    crop_square,
    crop_window,
    hand_loader,
)
from tasks.train.hands import pick_hand
from tasks.train.release import open_release
from tests.train.releases import CLASSES, make_release, read_manifest

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dataset") / "releases" / "v1"
    return make_release(folder, splits={"train": 24, "test": 12}, seed=5, crops=True)


def test_a_sample_read_by_offset_is_the_member_webdataset_reads(release):
    manifest = read_manifest(release, "train").set_index("image_id")
    (shard,) = set(manifest["shard"])
    reader = ShardReader(str(release))
    samples = list(wds.WebDataset(str(release / shard), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == list(manifest.index)
    for sample in samples:
        row = manifest.loc[sample["__key__"]]
        data = reader.read(row["shard"], int(row["offset"]), int(row["size"]))
        assert data == sample["jpg"]
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.array_equal(decoded, np.asarray(
            Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
    with pytest.raises(EOFError):
        reader.read(shard, os.path.getsize(release / shard) - 4, 16)
    reader.close()


def test_one_shard_serves_two_workers_with_their_own_handles(release):
    data = open_release(str(release), view="full")
    assert len(data.train.shards) == 1
    reader = ShardReader(str(release))
    reader.read(data.train.shards[0], int(data.train.offset[0]), 16)  # parent holds a handle
    crops = HandCrops(data.train, reader, size=32, sampling=Sampling(seed=1))

    def batches(workers: int) -> list[torch.Tensor]:
        loader = hand_loader(crops, batch_size=8, workers=workers, seed=1, shuffle=True)
        return [torch.cat([x.flatten(), g, h]) for x, g, h in loader]

    in_process, two_workers = batches(0), batches(2)
    assert len(two_workers) == 3
    assert all(torch.equal(a, b) for a, b in zip(in_process, two_workers, strict=True))


def test_the_crop_is_a_square_around_the_box_black_outside_the_image():
    assert crop_window((10, 20, 40, 20), scale=1.0) == (10, 10, 50, 50)
    assert crop_window((10, 20, 40, 20), scale=2.0) == (-10, -10, 70, 70)
    pixels = np.full((40, 60, 3), 200, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    corner = crop_square(buf.getvalue(), (0.0, 0.0, 0.25, 0.25), scale=2.0, size=30)
    assert corner.shape == (30, 30, 3)
    assert corner[:5, :5].max() == 0 and corner[-5:, -5:].min() == 200  # padded top-left


def test_the_augmentations_move_the_crop_and_scale_its_colours_by_the_drawn_factors(release):
    assert crop_window((10, 20, 40, 20), scale=1.0, shift=(0.25, -0.5)) == (20, -10, 60, 30)
    pixels = np.array([[[100, 50, 150]]], dtype=np.uint8)
    assert adjust_colors(pixels, brightness=1.0, contrast=1.0) is pixels
    assert adjust_colors(pixels, brightness=1.1, contrast=1.0).tolist() == [[[110, 55, 165]]]
    assert adjust_colors(pixels, brightness=1.0, contrast=2.0).tolist() == [[[100, 0, 200]]]
    data = open_release(str(release))
    reader = ShardReader(str(release))
    plain = HandCrops(data.train, reader, size=32, sampling=Sampling(seed=1))
    moved = HandCrops(data.train, reader, size=32,
                      sampling=Sampling(seed=1, shift=0.2, color_jitter=0.3))
    n = len(moved)
    draws = [moved.choose((0, i)) for i in range(n)]
    assert n >= 8 and draws == [moved.choose((0, i)) for i in range(n)]  # by the key alone
    assert [d.row for d in draws] == [plain.choose((0, i)).row for i in range(n)]
    assert all(max(map(abs, d.shift)) <= 0.2 and 0.7 <= d.contrast <= 1.3 for d in draws)
    assert len({d.brightness for d in draws}) == n
    assert not torch.equal(moved[(0, 0)][0], plain[(0, 0)][0])
    mirrored = HandCrops(data.train, reader, size=32, sampling=Sampling(seed=1, flip=1.0))
    for i in range(n):
        (a, label_a, hand_a), (b, label_b, hand_b) = mirrored[(0, i)], plain[(0, i)]
        assert torch.equal(a, b.flip(1)) and label_a == label_b
        assert hand_a == (1 - hand_b if hand_b >= 0 else -1)
    half = HandCrops(data.train, reader, size=32, sampling=Sampling(seed=1, flip=0.5))
    assert 0 < sum(half.choose((e, i)).mirrored for e in range(4) for i in range(n)) < 4 * n


def test_a_large_frame_is_decoded_at_a_reduced_scale_with_the_same_crop():
    rng = np.random.default_rng(0)
    pixels = np.zeros((960, 1280, 3), dtype=np.uint8)
    pixels[400:560, 600:760] = (220, 30, 30)
    pixels[400:560, 600:640] = rng.integers(0, 40, size=(160, 40, 3))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    box = (600 / 1280, 400 / 960, 160 / 1280, 160 / 960)
    crop = crop_square(buf.getvalue(), box, scale=1.0, size=32).astype(int)
    assert abs(crop[16, 24] - np.array([220, 30, 30])).max() < 30
    assert crop[16, 2].mean() < 60  # the dark bar on the left


def test_the_gesture_hand_is_chosen_seven_times_in_ten():
    gesture_hand = np.array([True, False, True])
    rng = np.random.default_rng(0)
    picks = [pick_hand(np.array([0, 1]), gesture_hand, rng, gesture_p=0.7) for _ in range(4000)]
    assert abs(picks.count(0) / 4000 - 0.7) < 0.03
    alone = {pick_hand(np.array([2]), gesture_hand, rng, gesture_p=0.7) for _ in range(50)}
    free_only = {pick_hand(np.array([1]), gesture_hand, rng, gesture_p=0.7) for _ in range(50)}
    assert alone == {2} and free_only == {1}


def test_both_views_give_the_same_hands_and_free_hands_flip_the_leading_hand(release):
    full = open_release(str(release), view="full")
    crops = open_release(str(release), view="auto")
    assert (full.view, crops.view, full.eval_split) == ("full", "crops", "test")
    for a, b in ((full.train, crops.train), (full.evaluation, crops.evaluation)):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert np.array_equal(a.hand, b.hand)
    manifest = read_manifest(release, "train").sort_values("image_id")
    leading = {"right": 0, "left": 1}
    expected = [leading[h] if label != "no_gesture" else 1 - leading[h]
                for h, labels in zip(manifest["leading_hand"], manifest["labels"], strict=True)
                for label in labels]
    assert full.train.hand.tolist() == expected
    assert full.train.label.tolist() == [CLASSES.index(x) for ls in manifest["labels"]
                                         for x in ls]


def test_a_crop_from_the_crops_view_matches_the_crop_from_the_frame(release):
    full = open_release(str(release), view="full")
    crops = open_release(str(release), view="crops")
    reader = ShardReader(str(release))
    a = HandCrops(full.evaluation, reader, size=32)
    b = HandCrops(crops.evaluation, reader, size=32)
    inner = [a[(0, i)][0][3:-3, 3:-3].float() for i in range(len(a))]  # edges: 1 px rounding
    outer = [b[(0, i)][0][3:-3, 3:-3].float() for i in range(len(b))]
    labels = full.evaluation.label
    for i, x in enumerate(inner):
        same = (x - outer[i]).abs().mean()
        others = [(x - y).abs().mean() for y, label in zip(outer, labels, strict=True)
                  if label != labels[i]]
        assert same < 12 and same < min(others) / 3
