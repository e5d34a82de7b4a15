"""`hagrid check [--repair]`: a root damaged by concurrent runs (before the lock) is fixed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.ingest import ingest
from tasks.catalog import Catalog
from tasks.integrity import REPAIRS, check_root, find_problems, repair_root
from tasks.storage import LocalStorage

pytestmark = pytest.mark.usefixtures("prefect_harness")
HAGRID = str(Path(sys.executable).with_name("hagrid"))


@pytest.fixture(scope="module")
def clean_root(crowd_batch: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    ingest(source=str(crowd_batch), submissions=str(crowd_batch / "submissions.csv"),
           root=str(root), commit_every=16)
    return root


def _damaged(clean_root: Path, tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """What two concurrent ingests and a cleanup of a live run's files did to a root."""
    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    catalog = Catalog(LocalStorage(root))
    batches = [b for b in catalog.committed_batches()
               if (root / "catalog" / "images" / f"{b}.parquet").exists()]
    # a second run recorded the first batch's inputs again and accepted their images again
    first = batches[0]
    subs = catalog.read_table("submissions").to_pandas()
    again = subs[subs["batch_id"] == first]
    images = catalog.read_table("images").to_pandas()
    twice = images[images["batch_id"] == first]
    catalog.write_batch("99999-concurrent", {
        "submissions": _table("submissions", again), "images": _table("images", twice)},
        info={"kind": "ingest"})
    # the cleanup of another run deleted a committed batch's images file
    lost = batches[1]
    lost_ids = set(images.loc[images["batch_id"] == lost, "image_id"])
    (root / "catalog" / "images" / f"{lost}.parquet").unlink()
    # an object no row names, and table files of a batch that never committed
    orphan = f"objects/00/00/{hashlib.sha256(b'orphan').hexdigest()}.jpg"
    (root / orphan).parent.mkdir(parents=True, exist_ok=True)
    (root / orphan).write_bytes(b"orphan")
    (root / "catalog" / "submissions" / "99999-zombie.parquet").write_bytes(b"partial")
    return root, {"twice_subs": set(again["submission_id"]), "twice_images": set(twice["image_id"]),
                  "lost": lost_ids, "orphan": orphan}


def _table(name: str, frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from schemas.tables import CATALOG_TABLES

    return pa.Table.from_pandas(frame, schema=CATALOG_TABLES[name], preserve_index=False)


def test_a_clean_root_has_no_problems(clean_root):
    assert check_root(LocalStorage(clean_root)) == []


def test_check_lists_every_kind_of_damage(clean_root, tmp_path):
    root, damage = _damaged(clean_root, tmp_path)
    problems = check_root(LocalStorage(root))
    by_kind: dict[str, set[str]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, set()).add(p.key)
    assert by_kind["input_recorded_twice"] == damage["twice_subs"]
    assert by_kind["image_recorded_twice"] == damage["twice_images"]
    lost_subs = {p.key for p in problems if p.kind == "accepted_without_image_row"}
    assert len(lost_subs) == len(damage["lost"])  # type: ignore[arg-type]
    assert by_kind["object_without_row"] == {damage["orphan"]}
    assert by_kind["uncommitted_files"] == {"catalog/submissions/99999-zombie.parquet"}


def test_repair_fixes_everything_without_losing_a_row(clean_root, tmp_path):
    root, damage = _damaged(clean_root, tmp_path)
    store = LocalStorage(root)
    before = Catalog(store).read_table("submissions").num_rows
    report = repair_root(store)
    assert report.left == []
    assert report.fixed["input_recorded_twice"] == len(damage["twice_subs"])  # type: ignore[arg-type]
    assert report.fixed["accepted_without_image_row"] == len(damage["lost"])  # type: ignore[arg-type]
    assert check_root(store) == []
    # rebuilt rows equal the originals, features included
    clean = Catalog(LocalStorage(clean_root)).read_table("images").to_pandas()
    fixed = Catalog(store).read_table("images").to_pandas()
    cols = ["image_id", "sha256", "object_key", "width", "height", "phash", "phash_mirror",
            "thumb", "user_id", "gesture", "submission_id"]
    key = "image_id"
    assert fixed[cols].sort_values(key).reset_index(drop=True).equals(
        clean[cols].sort_values(key).reset_index(drop=True))
    # removed rows are kept under catalog/_repairs with their reason
    archived = [k for k in store.list(REPAIRS) if k.endswith(".parquet")]
    kept = sum(len(pd.read_parquet(root / k)) for k in archived)
    after = Catalog(store).read_table("submissions").num_rows
    assert after + kept >= before and after == before - len(damage["twice_subs"])  # type: ignore[arg-type]
    assert not (root / str(damage["orphan"])).exists()


def test_later_stages_run_on_a_damaged_root(clean_root, tmp_path):
    from flows.crowd import validate

    root, _ = _damaged(clean_root, tmp_path)
    report = validate(root=str(root), crowd="simulated", cycles=3)
    assert sum(report["verdicts"].values()) > 0


def test_problems_of_a_toy_catalog():
    subs = pd.DataFrame({"submission_id": ["s1", "s2", "s2", "s3"],
                         "outcome": ["accepted", "accepted", "accepted", "rejected"],
                         "image_id": ["i1", "i2", "i2", None],
                         "sha256": ["a" * 64, "b" * 64, "b" * 64, None]})
    images = pd.DataFrame({"image_id": ["i1", "i1"], "submission_id": ["s1", "s1"],
                           "object_key": [f"objects/aa/aa/{'a' * 64}.jpg"] * 2})
    objects = {f"objects/aa/aa/{'a' * 64}.jpg", f"objects/bb/bb/{'b' * 64}.jpg",
               "objects/cc/cc/x.jpg"}
    kinds = sorted((p.kind, p.key, p.fixable)
                   for p in find_problems(subs, images, objects=objects))
    assert kinds == [("accepted_without_image_row", "s2", True),
                     ("image_recorded_twice", "i1", True),
                     ("input_recorded_twice", "s2", True),
                     ("object_without_row", "objects/cc/cc/x.jpg", True)]


@pytest.mark.slow
def test_check_cli_exit_codes(clean_root, tmp_path):
    root, _ = _damaged(clean_root, tmp_path)
    found = subprocess.run([HAGRID, "check", "--root", str(root)], capture_output=True,
                           text=True, timeout=300, check=False)
    assert found.returncode == 1 and "image_recorded_twice" in found.stdout, found.stderr
    fixed = subprocess.run([HAGRID, "check", "--root", str(root), "--repair"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    again = subprocess.run([HAGRID, "check", "--root", str(root)], capture_output=True,
                           text=True, timeout=300, check=False)
    assert again.returncode == 0 and "consistent" in again.stdout


def test_check_content_finds_a_damaged_object_and_drops_its_seal(clean_root, tmp_path):
    from tasks.publish.checked_objects import Seal, load_checked, save_checked

    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    store = LocalStorage(root)
    keys = sorted(Catalog(store).read_table("images").column("object_key").to_pylist())
    save_checked(store, {(k, 1): Seal(i, 1, 1, 1) for i, k in enumerate(keys[:3])})
    assert check_root(store, content=True) == []
    damaged = root / keys[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, size unchanged
    damaged.write_bytes(bytes(data))
    assert [p.kind for p in check_root(store)] == []  # the tables alone cannot see it
    [problem] = check_root(store, content=True)
    assert (problem.kind, problem.key, problem.fixable) == ("object_bytes_changed", keys[1], False)
    assert hashlib.sha256(bytes(data)).hexdigest() in problem.detail
    assert sorted(k for k, _ in load_checked(store)) == [keys[0], keys[2]]  # no trust left
    found = subprocess.run([HAGRID, "check", "--root", str(root), "--content"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert found.returncode == 1 and "object_bytes_changed" in found.stdout, found.stderr
