"""The publish flow: a release read back through the real readers, reproducible, immutable,
sticky across releases, and refused when a data contract fails."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import ContractsFailed, publish
from schemas.annotation import BOXES
from schemas.release import HAGRID_CLASS_ORDER, MANIFEST, check_version
from schemas.tables import IMAGE_EXTRAS
from schemas.taxonomy import load_taxonomy
from tasks.catalog import Catalog
from tasks.publish.exports import export_layout
from tasks.publish.published_image import published_image
from tasks.publish.writer import ReleaseExists
from tasks.storage import LocalStorage
from tests.catalogs import make_release_catalog
from tests.prefect_api import flow_runs, run_log_lines, run_logs_at_info

pytestmark = pytest.mark.usefixtures("prefect_harness")
HAGRID = str(Path(sys.executable).with_name("hagrid"))


def _manifest(release: Path) -> pd.DataFrame:
    parts = [pq.read_table(p) for p in sorted((release / "manifests").glob("*.parquet"))]
    return pa.concat_tables(parts).to_pandas()


def _files(release: Path) -> dict[str, bytes]:
    return {p.relative_to(release).as_posix(): p.read_bytes()
            for p in sorted(release.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish") / "root"
    outcomes = make_release_catalog(root, n=400, seed=3, users=60, links=8)
    with run_logs_at_info():  # as the UI shows the run
        summary = publish(root=str(root), version="v1", fractions="76/9/15",
                          shard_max_count=50, yolo=True)
    return root, outcomes, summary, root / "releases" / "v1"


def test_release_holds_exactly_the_images_that_passed_every_stage(released):
    _, outcomes, summary, release = released
    manifest = _manifest(release)
    assert set(manifest["image_id"]) == set(outcomes["released"])
    assert summary["images"] == len(outcomes["released"])
    for split in ("train", "val", "test"):
        table = pq.read_table(release / "manifests" / f"{split}.parquet")
        assert table.schema.equals(MANIFEST)
        assert set(table.column("split").to_pylist()) == {split}
    assert {p.name for p in release.iterdir()} >= {
        "manifests", "shards", "hagrid", "coco", "yolo", "data_docs", "report", "README.md",
        "SHA256SUMS", "release.json"}
    assert (release / "data_docs" / "index.html").is_file()
    assert (release / "report" / "index.html").is_file()
    assert (release / "report" / "contracts.html").is_file()
    assert (release / "report" / "contracts.json").is_file()


def _links(path: Path) -> list[str]:
    """The relative links of an HTML page or a Markdown file."""
    text = path.read_text(encoding="utf-8")
    pattern = r'href="([^"#]+)' if path.suffix == ".html" else r"\]\(([^)#]+)\)"
    return re.findall(pattern, text)


def test_report_contracts_page_and_data_card_link_each_other(released):
    _, _, _, release = released
    report, contracts = release / "report" / "index.html", release / "report" / "contracts.html"
    card = release / "README.md"
    expected = {report: {"contracts.html", "../README.md", "../data_docs/index.html"},
                contracts: {"index.html", "../README.md", "../data_docs/index.html",
                            "contracts.json"},
                card: {"report/index.html", "report/contracts.html", "data_docs/index.html",
                       "report/contracts.json"}}
    for page, links in expected.items():
        found = _links(page)
        assert links <= set(found), page.name
        assert all((page.parent / link).resolve().is_file() for link in found), page.name


def test_contracts_page_lists_every_expectation_as_passed(released):
    _, _, _, release = released
    checked = json.loads((release / "release.json").read_text())["contracts_checked"]
    results = json.loads((release / "report" / "contracts.json").read_text())
    assert results["success"] and len(results["results"]) == sum(checked.values())
    assert {t: c["passed"] for t, c in results["tables"].items()} == checked
    page = (release / "report" / "contracts.html").read_text(encoding="utf-8")
    status = re.findall(r'<td class="status (?:pass|fail)">([^<]*)</td>', page)
    assert len(status) == sum(checked.values()) + len(checked)  # rows, then the table summary
    assert set(status) == {"pass"}
    assert "PASSED: all" in page and "<script" not in page


def test_the_summary_artifact_holds_the_tables_and_contracts(released):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, _, summary, release = released
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["release-summary"])))
    texts = [a.data for a in found if isinstance(a.data, str) and summary["uri"] in a.data]
    assert texts, "no release-summary artifact for this release"
    text = texts[0]
    assert f"| train | {summary['split_images']['train']} |" in text
    assert "## Images per class and split" in text and "expectations passed" in text
    assert f"Documents, inside `{release}`:" in text
    assert "`report/contracts.html`" in text and "file://" not in text


def test_splits_are_user_disjoint_and_keep_links_whole(released):
    root, _, _, release = released
    manifest = _manifest(release)
    assert (manifest.groupby("user_id")["split"].nunique() == 1).all()
    subs = Catalog(LocalStorage(root)).read_table("submissions").to_pandas()
    split_of_user = manifest.drop_duplicates("user_id").set_index("user_id")["split"]
    images = Catalog(LocalStorage(root)).read_table("images").to_pandas()
    owner = images.set_index("image_id")["user_id"]
    linked = 0
    for dup in subs.dropna(subset=["duplicate_of"]).itertuples():
        a, b = dup.user_key, owner[dup.duplicate_of]
        if a in split_of_user and b in split_of_user:
            assert split_of_user[a] == split_of_user[b]
            linked += a != b
    assert linked >= 1
    fractions = manifest["split"].value_counts(normalize=True)
    assert abs(fractions["train"] - 0.76) < 0.1 and abs(fractions["test"] - 0.15) < 0.1


def test_random_access_by_manifest_offset_returns_the_image(released):
    root, _, _, release = released
    manifest = _manifest(release)
    store = LocalStorage(root)
    objects = Catalog(store).read_table("images").to_pandas().set_index("image_id")
    for row in manifest.sample(25, random_state=0).itertuples():
        with (release / row.shard).open("rb") as fh:
            fh.seek(row.offset)
            data = fh.read(row.size)
            fh.seek(row.json_offset)
            meta = json.loads(fh.read(row.json_size))
        assert hashlib.sha256(data).hexdigest() == row.sha256
        stored = store.read_bytes(objects.loc[row.image_id, "object_key"])
        assert data == published_image(stored, orientation=1)  # the stored bytes, stripped
        assert row.source_sha256 == objects.loc[row.image_id, "sha256"]
        assert meta["image_id"] == row.image_id and meta["labels"] == list(row.labels)


def test_webdataset_reads_every_shard_member(released):
    _, _, _, release = released
    manifest = _manifest(release).set_index("image_id")
    for split in ("train", "val", "test"):
        urls = sorted(str(p) for p in (release / "shards").glob(f"{split}-*.tar"))
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
        keys = [s["__key__"] for s in samples]
        assert keys == sorted(manifest.index[manifest["split"] == split])
        for s in samples[:20]:
            row = manifest.loc[s["__key__"]]
            assert s["json"]["gesture"] == row["gesture"]
            assert s["json"]["bboxes"] == [list(b) for b in row["boxes"]]
            assert s["jpg"].size == (row["width"], row["height"])
    counts = manifest.groupby("shard").size()
    assert counts.max() <= 50 and len(counts) > 3


def test_checksums_cover_and_verify_every_file(released):
    _, _, _, release = released
    files = _files(release)
    listed = {}
    for line in files.pop("SHA256SUMS").decode().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == set(files)
    assert all(hashlib.sha256(files[n]).hexdigest() == d for n, d in listed.items())


def test_coco_export_loads_in_pycocotools(released):
    _, _, _, release = released
    manifest = _manifest(release)
    coco = COCO(str(release / "coco" / "test.json"))
    test = manifest[manifest["split"] == "test"]
    assert len(coco.getImgIds()) == len(test)
    assert len(coco.getAnnIds()) == sum(len(b) for b in test["boxes"])
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names == set(load_taxonomy().box_labels)


def test_hagrid_json_and_exported_layout_read_like_hagrid(released, tmp_path):
    _, _, _, release = released
    manifest = _manifest(release).set_index("image_id")
    out = tmp_path / "layout"
    result = CliRunner().invoke(app, ["export-layout", str(release), str(out)])
    assert result.exit_code == 0, result.output
    seen = 0
    for split in ("train", "val", "test"):  # the HaGRID loader's way of reading
        for ann_file in sorted((out / "annotations" / split).glob("*.json")):
            gesture = ann_file.stem
            for image_name, entry in json.loads(ann_file.read_text()).items():
                image = Image.open(out / gesture / f"{image_name}.jpg")
                row = manifest.loc[image_name]
                assert image.size == (row["width"], row["height"])
                assert entry["labels"] == list(row["labels"])
                assert entry["leading_hand"] == row["leading_hand"]
                assert entry["user_id"] == row["user_id"]
                seen += 1
    assert seen == len(manifest)


def test_data_card_states_the_counts(released):
    _, outcomes, _, release = released
    card = (release / "README.md").read_text()
    assert f"{len(outcomes['released'])} images" in card
    assert "Licence:" in card and "wrong_gesture" in card and "child" in card
    info = json.loads((release / "release.json").read_text())
    assert info["splits"]["links"] >= 1
    assert sum(sum(v.values()) for v in info["counts"].values()) == len(outcomes["released"])
    manifest = _manifest(release)
    for split, target in (("train", "0.760"), ("val", "0.090"), ("test", "0.150")):
        n = int((manifest["split"] == split).sum())  # counts as integers, fractions as such
        row = (f"| {split} | {n} | {manifest.loc[manifest['split'] == split, 'user_id'].nunique()}"
               f" | {n / len(manifest):.3f} | {target} |")
        assert row in card, row
    assert info["splits"]["fractions"] == pytest.approx(
        manifest["split"].value_counts(normalize=True).to_dict(), abs=1e-4)
    assert info["splits"]["target_fractions"] == {"test": 0.15, "train": 0.76, "val": 0.09}
    assert all(f"**Warning:** {w}." in card for w in info["splits"]["warnings"])


def test_same_catalog_same_bytes_and_an_existing_release_is_never_overwritten(
        released, tmp_path):
    root, _, _, release = released
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("releases"))
    publish(root=str(copy), version="v1", fractions="76/9/15", shard_max_count=50, yolo=True)
    assert _files(copy / "releases" / "v1") == _files(release)
    before = _files(release)
    with pytest.raises(ReleaseExists):
        publish(root=str(root), version="v1")
    assert _files(release) == before
    result = CliRunner().invoke(app, ["publish", "--root", str(root), "--version", "v1"])
    assert result.exit_code == 2 and "never overwritten" in result.output


def _completed_run(root: Path) -> object:
    """The completed ``publish v1`` run of ``root``."""
    runs = [r for r in flow_runs("publish") if r.parameters.get("root") == str(root)]
    assert "publish v1" in {r.name for r in runs}
    [run] = [r for r in runs if r.name == "publish v1" and r.state_name == "Completed"]
    return run


def test_the_run_is_named_after_the_version_it_publishes(released):
    root, _, summary, _ = released
    warned = [ln for ln in run_log_lines(_completed_run(root).id) if ln.startswith("split ")]
    assert warned == summary["splits"]["warnings"]  # warnings reach the UI (and the CLI)


def _megabytes(files: list[Path]) -> str:
    return f"{sum(f.stat().st_size for f in files) / 1e6:,.1f} MB"


def test_the_run_log_gives_each_step_its_numbers_in_order(released):
    root, _, summary, release = released
    lines = run_log_lines(_completed_run(root).id)
    pattern = r"shards (\w+): (\d+) \(([\d,.]+ MB), (\d+) images\)"
    per_split = {m[1]: m.groups()[1:] for ln in lines if (m := re.fullmatch(pattern, ln))}
    assert set(per_split) == set(summary["split_images"]) == {"train", "val", "test"}
    for split, (count, size, images) in per_split.items():
        files = sorted((release / "shards").glob(f"{split}-*.tar"))
        assert int(count) == len(files) and int(images) == summary["split_images"][split]
        assert size == _megabytes(files)
    tally = summary["contracts"].values()
    passed = sum(t["passed"] for t in tally)
    exports = [p for folder in ("hagrid", "coco", "yolo") for p in (release / folder).rglob("*")
               if p.is_file()]
    counts = summary["split_images"]
    shares = ", ".join(f"{name} {100 * counts[name] / summary['images']:.1f}% (target {target}%)"
                       for name, target in (("train", 76), ("val", 9), ("test", 15)))
    assert f"{summary['images']} images; split shares {shares}" in lines
    expected = [f"images: {summary['images']} made in ",
                "shards written in ",
                f"contracts: {passed} passed, 0 failed on {len(tally)} tables in ",
                f"documents: {len(exports)} export files, the report, the data card, ",
                "committed release v1 in "]
    found = [next(i for i, ln in enumerate(lines) if ln.startswith(start)) for start in expected]
    assert found == sorted(found)  # in the order the steps ran
    shards = sorted((release / "shards").glob("*.tar"))
    assert lines[found[1]].endswith(f": {summary['shards']} ({_megabytes(shards)})")
    assert lines[found[-1]].endswith(f": {summary['uri']}")
    assert not any(ln.startswith("crops:") for ln in lines)  # no crops view asked for


def test_the_cli_refuses_an_existing_release_and_an_empty_root_in_one_line(released,
                                                                           tmp_path):
    root = released[0]
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")  # a loaded machine
    for name in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):  # as a user runs it
        env.pop(name, None)
    for args, says in ((["--root", str(root), "--version", "v1"], "never overwritten"),
                       (["--root", str(tmp_path / "empty")], "nothing to publish")):
        done = subprocess.run([HAGRID, "publish", *args], env=env, capture_output=True,
                              text=True, check=False, timeout=600)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()  # Prefect's traceback is not shown
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ") and says in lines[0]
    assert (tmp_path / "temporary-server.log").exists()  # the server wrote there, not here


def test_unsafe_version_names_are_refused(released):
    root, _, _, _ = released
    for bad in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            publish(root=str(root), version=bad)
    assert not (root.parent / "evil").exists()


def test_a_version_with_a_trailing_newline_is_refused(released):
    root, _, _, _ = released
    for bad in ("v1\n", "v2\n", "v1\r\n"):
        with pytest.raises(ValueError, match="release version"):
            publish(root=str(root), version=bad, fractions="76/9/15", shard_max_count=50)
        with pytest.raises(ValueError):
            check_version(bad)
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["v1"]


def test_users_stay_in_their_split_in_a_later_release(tmp_path):
    root = tmp_path / "root"
    make_release_catalog(root, n=300, seed=5, users=50, user_prefix="p")
    publish(root=str(root), version="2026.1", fractions="92/8")
    first = _manifest(root / "releases" / "2026.1")
    make_release_catalog(root, n=300, seed=6, users=90, user_prefix="p", batch="00006-more")
    publish(root=str(root), version="2026.2", fractions="92/8")
    second = _manifest(root / "releases" / "2026.2")
    assert set(first["image_id"]) <= set(second["image_id"])
    info = json.loads((root / "releases" / "2026.2" / "release.json").read_text())
    assert info["splits"]["sticky_users"] > 0
    old = first.drop_duplicates("user_id").set_index("user_id")["split"]
    new = second.drop_duplicates("user_id").set_index("user_id")["split"]
    assert (new[old.index] == old).all()
    fresh = second[~second["user_id"].isin(old.index)]
    assert len(fresh) > 50 and set(fresh["split"]) == {"train", "test"}
    assert abs((second["split"] == "test").mean() - 0.08) < 0.05


def test_a_failing_contract_stops_the_release_and_keeps_its_data_docs(tmp_path):
    root = tmp_path / "root"
    outcomes = make_release_catalog(root, n=60, seed=7)
    bad = outcomes["released"][0]
    row = {"image_id": bad, "box_index": 0, "x": 0.5, "y": 0.5, "w": 0.0, "h": 0.2,
           "label": "thumbs_sideways", "label_conf": 1.0, "agreement": 0.9, "n_votes": 3,
           "n_annotators": 3, "leading_hand": "left", "leading_conf": 1.0,
           "method": "median_edges", "batch_id": "zz-bad",
           "decided_at": pd.Timestamp("2030-01-01", tz="UTC")}
    Catalog(LocalStorage(root)).write_batch(
        "zz-bad", {"boxes": pa.Table.from_pylist([row], schema=BOXES)}, info={})
    with pytest.raises(ContractsFailed) as err:
        publish(root=str(root), version="v1")
    assert "label" in str(err.value) and "manifest" in str(err.value)
    releases = root / "releases"
    assert not (releases / "v1").exists()
    refused = releases / ".refused-v1"
    assert (refused / "data_docs" / "index.html").is_file()
    page = (refused / "report" / "contracts.html").read_text(encoding="utf-8")
    assert f"{refused}/report/contracts.html" in "\n".join(err.value.__notes__)
    assert "FAILED: " in page and '<td class="status fail">FAIL</td>' in page
    assert "&quot;thumbs_sideways&quot;" in page  # the observed value that broke it
    assert all((refused / "report" / link).resolve().is_file() for link in _links(
        refused / "report" / "contracts.html"))
    results = json.loads((refused / "report" / "contracts.json").read_text())
    assert not results["success"] and any(
        not r["success"] and r["kwargs"].get("column") == "w" for r in results["results"])
    assert not [p for p in releases.iterdir() if p.name.startswith(".staging")]


def test_the_real_pipeline_publishes(tmp_path):
    """Ingest-free catalog, then the simulated crowd through every stage, then publish."""
    from flows.annotate import annotate
    from flows.crowd import filter_stage, validate
    from tests.catalogs import make_catalog

    root = tmp_path / "root"
    make_catalog(root, n=60, seed=8)
    validate(root=str(root), crowd="simulated", cycles=20)
    filter_stage(root=str(root), crowd="simulated", cycles=20)
    annotate(root=str(root), crowd="simulated", cycles=20)
    summary = publish(root=str(root), version="v1")
    boxes = Catalog(LocalStorage(root)).read_table("boxes").to_pandas()
    manifest = _manifest(root / "releases" / "v1")
    assert set(manifest["image_id"]) == set(boxes["image_id"])
    assert summary["images"] == len(manifest) > 20


def imported_boxes(images: pd.DataFrame, batch: str) -> pa.Table:
    """One imported box per image (method import:hagrid), leading hand unknown."""
    return pa.Table.from_pylist([{
        "image_id": iid, "box_index": 0, "x": 0.2, "y": 0.2, "w": 0.3, "h": 0.4,
        "label": gesture, "label_conf": 1.0, "agreement": 1.0, "n_votes": 1,
        "n_annotators": 1, "leading_hand": None, "leading_conf": None,
        "method": "import:hagrid", "batch_id": batch,
        "decided_at": pd.Timestamp("2030-01-01", tz="UTC")}
        for iid, gesture in zip(images["image_id"], images["gesture"], strict=True)],
        schema=BOXES)


def test_a_v2_release_keeps_source_splits_and_extras_in_hagrids_class_order(tmp_path):
    root = tmp_path / "root"
    outcomes = make_release_catalog(root, n=90, seed=12, users=24)
    catalog = Catalog(LocalStorage(root))
    images = catalog.read_table("images").to_pandas()
    images = images[images["image_id"].isin(outcomes["released"])].sort_values("image_id")
    users = images["user_id"].value_counts()
    a, b, c = users[users >= 2].index[:3]  # a: val, b: test, c: train and test (mixed)
    source = {**dict.fromkeys(images.loc[images["user_id"] == a, "image_id"], "val"),
              **dict.fromkeys(images.loc[images["user_id"] == b, "image_id"], "test")}
    mixed = images.loc[images["user_id"] == c, "image_id"].tolist()
    source |= {mixed[0]: "train", **dict.fromkeys(mixed[1:], "test")}
    meta = {"age": [24.4], "gender": ["female"], "race": ["White"]}
    first = next(iter(source))
    extras = {iid: {"united_bbox": None, "united_label": None, "meta": meta} for iid in source}
    extras[first] = {**extras[first], "united_bbox": [[0.1, 0.1, 0.5, 0.5]],
                     "united_label": [images.set_index("image_id").loc[first, "gesture"]]}
    rows = [{"image_id": iid, "source": "hagrid:/data", "source_split": split,
             "extras_json": json.dumps(extras[iid]),
             "recorded_at": pd.Timestamp("2030-01-02", tz="UTC")}
            for iid, split in source.items()]
    catalog.write_batch("zz-import", {
        "boxes": imported_boxes(images[images["image_id"].isin(source)], "zz-import"),
        "image_extras": pa.Table.from_pylist(rows, schema=IMAGE_EXTRAS)}, info={})

    publish(root=str(root), version="v2", taxonomy="hagrid_v2", yolo=True, shard_max_count=40)
    release = root / "releases" / "v2"
    info = json.loads((release / "release.json").read_text())
    assert info["settings"]["fractions"] == {"test": 0.15, "train": 0.76, "val": 0.09}
    classes = list(HAGRID_CLASS_ORDER["hagrid_v2"])
    assert info["classes"] == classes and info["settings"]["class_order"] == "hagrid"
    assert (release / "yolo" / "classes.txt").read_text().split() == classes
    coco = json.loads((release / "coco" / "train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == classes
    manifest = _manifest(release).set_index("image_id")
    assert set(manifest["split"]) == {"train", "val", "test"}
    by_user = manifest.groupby("user_id")["split"].unique()
    assert list(by_user[a]) == ["val"] and list(by_user[b]) == ["test"]
    assert list(by_user[c]) == ["test"]  # the most held-out of its source splits
    assert (manifest.groupby("user_id")["split"].nunique() == 1).all()
    split_info = info["splits"]
    assert (split_info["source_split_images"], split_info["source_split_moved"],
            split_info["source_split_conflict_users_listed"]) == (len(source), 1, [c])
    assert manifest.loc[list(source), "source_split"].tolist() == list(source.values())
    assert manifest["extras_json"].notna().sum() == len(source)
    assert manifest.loc[list(source), "leading_hand"].isna().all()
    for iid, row in manifest.iterrows():
        entry = json.loads((release / "hagrid" / row["split"] / f"{row['gesture']}.json")
                           .read_text())[iid]
        assert {"united_bbox", "united_label"} <= set(entry)
        if iid in source:
            assert entry["meta"] == meta and entry["leading_hand"] is None
            assert entry["united_bbox"] == extras[iid]["united_bbox"]
        else:
            assert entry["united_bbox"] is None and "meta" not in entry
            assert entry["leading_hand"] in ("left", "right")
    with (release / manifest.loc[first, "shard"]).open("rb") as fh:
        fh.seek(manifest.loc[first, "json_offset"])
        member = json.loads(fh.read(manifest.loc[first, "json_size"]))
    assert member["meta"] == meta and member["united_bbox"] == [[0.1, 0.1, 0.5, 0.5]]
    assert "leading hand unknown" in (release / "README.md").read_text()


@pytest.mark.slow
def test_publish_to_an_s3_dataset_root(s3_server, tmp_path, monkeypatch):
    """The S3 path: catalog and objects in a bucket (moto), the release uploaded there."""
    from tasks.storage import S3Storage

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.client().create_bucket(Bucket="hagrid")
    store = S3Storage("s3://hagrid/root", endpoint_url=s3_server.endpoint_url)
    outcomes = make_release_catalog(store, n=80, seed=9)
    summary = publish(root="s3://hagrid/root", version="v1", shard_max_count=20,
                      s3_endpoint_url=s3_server.endpoint_url)
    assert summary["uri"] == "s3://hagrid/root/releases/v1"
    release = S3Storage("s3://hagrid/root/releases/v1", endpoint_url=s3_server.endpoint_url)
    keys = release.list()
    assert "SHA256SUMS" in keys and "data_docs/index.html" in keys
    listed = dict(line.split("  ")[::-1] for line in
                  release.read_bytes("SHA256SUMS").decode().splitlines())
    assert set(listed) == set(keys) - {"SHA256SUMS"}
    table = pq.read_table(pa.BufferReader(release.read_bytes("manifests/train.parquet")))
    row = table.slice(3, 1).to_pylist()[0]
    data = release.read_range(row["shard"], row["offset"], row["size"])
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert set(_ids_of(release)) == set(outcomes["released"])
    out = export_layout(release, tmp_path / "layout")
    assert out["images"] == len(outcomes["released"])
    with pytest.raises(ReleaseExists):
        publish(root="s3://hagrid/root", version="v1", s3_endpoint_url=s3_server.endpoint_url)


def _ids_of(release) -> list[str]:
    ids = []
    for key in release.list("manifests"):
        ids += pq.read_table(pa.BufferReader(release.read_bytes(key))).column(
            "image_id").to_pylist()
    return ids


def test_a_later_publish_trusts_sealed_objects_and_refuses_a_changed_one(tmp_path,
                                                                         monkeypatch):
    from tasks.publish import checked_objects
    monkeypatch.setattr(checked_objects, "RACY_NS", 0)  # objects written just now may be sealed
    root = tmp_path / "root"
    make_release_catalog(root, n=40, seed=5, users=12, links=2)
    store = LocalStorage(root)
    publish(root=str(root), version="v1", workers=1)  # in this process: the patch holds
    seals = checked_objects.load_checked(store)
    images = Catalog(store).read_table("images").to_pandas()
    v1 = _manifest(root / "releases" / "v1")
    assert 0 < len(seals) == len(v1)  # every published image was stored clean: all sealed
    keys = dict(zip(images["image_id"], images["object_key"], strict=True))
    assert {k for k, _ in seals} == {keys[i] for i in v1["image_id"]}

    publish(root=str(root), version="v2", workers=1)
    shards = {name: data for name, data in _files(root / "releases" / "v1").items()
              if name.startswith("shards/")}
    assert shards == {name: data for name, data in _files(root / "releases" / "v2").items()
                      if name.startswith("shards/")}
    assert checked_objects.load_checked(store) == seals

    changed = root / keys[v1["image_id"].iloc[0]]
    data = bytearray(changed.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes: the write moves the ctime, so it is read again
    changed.write_bytes(bytes(data))
    with pytest.raises(Exception, match="do not match their sha256"):
        publish(root=str(root), version="v3", workers=1)
    assert not (root / "releases" / "v3").exists()
