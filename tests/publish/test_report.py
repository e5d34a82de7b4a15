"""The release quality report: files, totals, escaping, byte-for-byte reproducibility."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from schemas.release import MANIFEST
from tasks.publish.report import (
    BOX_AGREEMENT_NOTE,
    LEADING_CONF_NOTE,
    PLOTS,
    SUBJECT_BARS,
    plot_box_size,
    plot_images_per_subject,
    prepare_report,
    rejection_table,
    size_range,
    subject_bins,
    write_report,
)

GESTURES = ("call", "fist", "like", "peace")  # peace gets no images: still on the class axis
HOSTILE = "<script>alert('x')</script> & $\\frac{1}{0}$"


def synthetic_manifest(n: int = 60, *, seed: int = 0, splits: tuple[str, ...] = ("train", "test")
                       ) -> pd.DataFrame:
    """``n`` images of 3 gestures in ``splits``, 1-2 boxes each (the second a no_gesture hand),
    read back through Arrow as a release would be (boxes become numpy object arrays)."""
    rng = np.random.default_rng(seed)
    n_boxes = rng.integers(1, 3, n)
    rows = []
    for i in range(n):
        user = i % 12
        boxes = [[*rng.uniform(0.0, 0.6, 2), *rng.uniform(0.05, 0.4, 2)] for _ in range(n_boxes[i])]
        gesture = GESTURES[i % 3]
        rows.append({
            "image_id": f"{i:08x}-0000-4000-8000-000000000000",
            "split": splits[user % len(splits)], "sha256": f"{i:064x}",
            "width": 1920, "height": 1080, "format": "JPEG", "gesture": gesture,
            "user_id": f"user{user:02d}", "boxes": boxes,
            "labels": [gesture, "no_gesture"][: n_boxes[i]],
            "box_agreement": rng.uniform(0.5, 1.0, n_boxes[i]).tolist(),
            "leading_hand": "left" if i % 4 == 0 else "right",
            "leading_conf": float(rng.uniform(0.6, 1.0)), "n_annotators": 3,
            "annotation_method": "median_edges", "shard": "shards/train-000000.tar",
            "offset": 512 * i, "size": 100, "json_offset": 0, "json_size": 10,
        })
    return pa.Table.from_pylist(rows, schema=MANIFEST).to_pandas()


def rejections() -> pd.DataFrame:
    """A few rejection counts, a repeated (stage, reason) pair and a hostile reason."""
    return pd.DataFrame({
        "stage": ["annotation", "ingest", "ingest", "validation", "filtration", "ingest"],
        "reason": ["no_consensus", "exact_duplicate", "unreadable", "wrong_gesture", HOSTILE,
                   "exact_duplicate"],
        "count": [4, 7, 2, 5, 1, 3],
    })


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the synthetic manifest, rendered once for the module."""
    out = tmp_path_factory.mktemp("report") / "nested" / "report"  # does not exist yet
    return write_report(synthetic_manifest(), rejections=rejections(), out_dir=out,
                        title="Gestures <v1> & co", gestures=GESTURES)


def totals(page: str) -> dict[str, str]:
    """The two-cell rows of the page's tables, as {first cell: second cell}."""
    return dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", page))


def test_index_links_every_png_and_each_opens(report: Path) -> None:
    assert report.name == "index.html" and report.is_file()
    page = report.read_text(encoding="utf-8")
    linked = set(re.findall(r'<img src="([^"]+)"', page))
    written = {p.name for p in report.parent.glob("*.png")}
    assert linked == written == {name for name, _, _ in PLOTS}
    for name in written:
        with Image.open(report.parent / name) as image:
            image.verify()
        with Image.open(report.parent / name) as image:
            assert image.format == "PNG"
            assert image.width == 800 and 300 <= image.height <= 3000


def test_totals_match_the_manifest(report: Path) -> None:
    manifest = synthetic_manifest()
    page = report.read_text(encoding="utf-8")
    found = totals(page)
    n_boxes = int(manifest["labels"].map(len).sum())
    n_free = int(manifest["labels"].map(lambda x: list(x).count("no_gesture")).sum())
    assert found["images"] == str(len(manifest)) == "60"
    assert found["subjects"] == str(manifest["user_id"].nunique()) == "12"
    assert found["boxes"] == str(n_boxes)
    assert found["no_gesture boxes"] == str(n_free)
    assert found["subjects in more than one split"] == "0"
    assert found["not released: rejected or pending (all stages)"] == "22"
    assert "<td>peace</td><td>0</td><td>0</td><td>0</td>" in page  # class without images
    assert "<td>total</td><td>30</td><td>30</td><td>60</td>" in page


def test_text_is_escaped(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in page
    assert "<h1>Gestures &lt;v1&gt; &amp; co</h1>" in page


def test_same_inputs_same_bytes_in_any_row_order(report: Path, tmp_path: Path) -> None:
    shuffled = synthetic_manifest().sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = write_report(shuffled, rejections=rejections().iloc[::-1], out_dir=tmp_path,
                         title="Gestures <v1> & co", gestures=GESTURES)
    first = sorted(p.name for p in report.parent.iterdir())
    assert first == sorted(p.name for p in again.parent.iterdir())
    for name in first:
        assert (report.parent / name).read_bytes() == (again.parent / name).read_bytes(), name
    for name in first:
        assert b"Matplotlib" not in (report.parent / name).read_bytes()


@pytest.mark.parametrize("empty", [pd.DataFrame(), rejections().iloc[:0]])
def test_empty_rejections(empty: pd.DataFrame, tmp_path: Path) -> None:
    index = write_report(synthetic_manifest(20), rejections=empty, out_dir=tmp_path,
                         title="t", gestures=GESTURES)
    page = index.read_text(encoding="utf-8")
    assert "<p>none recorded</p>" in page and totals(page)["not released: rejected or pending (all stages)"] == "0"
    assert len(list(tmp_path.glob("*.png"))) == len(PLOTS)


def test_empty_manifest_and_single_split(tmp_path: Path) -> None:
    empty = synthetic_manifest(0)
    index = write_report(empty, rejections=rejections(), out_dir=tmp_path / "empty",
                         title="t", gestures=GESTURES)
    assert totals(index.read_text(encoding="utf-8"))["images"] == "0"
    assert len(list(index.parent.glob("*.png"))) == len(PLOTS)
    one = synthetic_manifest(20, splits=("val",))
    index = write_report(one, rejections=rejections(), out_dir=tmp_path / "one",
                         title="t", gestures=GESTURES)
    assert "<tr><th>class</th><th>val</th><th>total</th></tr>" in index.read_text("utf-8")


def test_prepare_report_counts() -> None:
    manifest = synthetic_manifest(seed=1, splits=("test", "train", "extra"))
    data = prepare_report(manifest, rejections=rejections(), gestures=("like", "fist", "call"))
    assert data.splits == ["train", "test", "extra"]  # SPLITS order, then unknown names
    assert data.classes == ["like", "fist", "call"]
    assert data.xywh.shape == (int(manifest["labels"].map(len).sum()), 4)
    assert np.allclose(data.xywh[0], np.stack(manifest["boxes"].iloc[0])[0])
    assert int(data.free.sum()) == int((manifest["labels"].map(len) == 2).sum())
    expected = pd.crosstab(manifest["gesture"], manifest["split"])
    assert (data.class_split == expected.loc[data.classes, data.splits]).all().all()
    assert len(data.agreement) == len(data.xywh)


def test_rejection_table_sums_and_orders() -> None:
    table = rejection_table(rejections())
    assert table.values.tolist() == [
        ["ingest", "exact_duplicate", 10], ["ingest", "unreadable", 2],
        ["validation", "wrong_gesture", 5], ["filtration", HOSTILE, 1],
        ["annotation", "no_consensus", 4]]


def test_box_size_axis_spans_the_data_with_a_margin() -> None:
    data = prepare_report(synthetic_manifest(), rejections=rejections(), gestures=GESTURES)
    size = np.sqrt(data.xywh[:, 2] * data.xywh[:, 3])
    low, high = plot_box_size(data).axes[0].get_xlim()
    assert (low, high) == size_range(size)
    margin = 0.1 * (size.max() - size.min())
    assert low == pytest.approx(size.min() - margin) and high == pytest.approx(size.max() + margin)
    assert size_range(np.array([0.1, 0.1])) == pytest.approx((0.09, 0.11))  # one size: 0.01
    assert size_range(np.array([0.0, 1.0])) == (0.0, 1.0)  # never past [0, 1]


def test_images_per_subject_shows_every_bar_on_a_linear_axis() -> None:
    """One subject with 5 images among subjects with 24: the small bar is drawn from zero
    and labelled (a log axis with its baseline at 2 made it look empty)."""
    manifest = synthetic_manifest(77)
    manifest["user_id"] = ["small" if i < 5 else f"big{i % 3}" for i in range(len(manifest))]
    data = prepare_report(manifest, rejections=rejections(), gestures=GESTURES)
    ax = plot_images_per_subject(data).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    bars = {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches
            if isinstance(p, Rectangle) and p.get_height() > 0}
    assert bars == {5: 1, 24: 3}
    assert sorted(t.get_text() for t in ax.texts if t.get_text()) == ["1", "3"]
    assert list(subject_bins(8)) == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    wide = subject_bins(100)  # past SUBJECT_BARS: whole-number widths, every count covered
    assert len(wide) - 1 <= SUBJECT_BARS and wide[0] == 0.5 and wide[-1] >= 100


def test_agreement_and_leading_conf_are_explained_under_their_plot(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    after = page.split('<img src="agreement.png"', 1)[1].split("<h2>", 1)[0]
    assert html.escape(BOX_AGREEMENT_NOTE) in after and html.escape(LEADING_CONF_NOTE) in after
    assert "mean IoU" in BOX_AGREEMENT_NOTE and "counts annotators, not weights" in LEADING_CONF_NOTE
    assert "not 0 to 1" in page.split('<img src="box_size.png"', 1)[1].split("<h2>", 1)[0]


def test_a_release_report_links_its_documents(tmp_path: Path) -> None:
    """Standalone, the report links nothing outside its folder; in a release it links the
    contracts page, the data card and the Data Docs and shows the contracts' tally."""
    plain = write_report(synthetic_manifest(20), rejections=rejections(), out_dir=tmp_path / "a",
                         title="t", gestures=GESTURES).read_text(encoding="utf-8")
    assert "<a href" not in plain
    tally = {"manifest": {"passed": 19, "failed": 0}, "links": {"passed": 1, "failed": 0}}
    page = write_report(synthetic_manifest(20), rejections=rejections(), out_dir=tmp_path / "b",
                        title="t", gestures=GESTURES, contracts=tally).read_text(encoding="utf-8")
    hrefs = re.findall(r'<a href="([^"]+)"', page)
    assert set(hrefs) == {"contracts.html", "../README.md", "../data_docs/index.html"}
    assert "all 20 expectations passed on 2 tables" in page and "2000-01-01" in page
    assert "<tr><td>manifest</td><td>19</td><td>0</td></tr>" in page
