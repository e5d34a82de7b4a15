"""The ingest flow end to end on generated crowd batches, with the planted truth."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.ingest import ingest
from schemas.tables import RUN_COLUMNS
from tasks.catalog import Catalog
from tasks.storage import LocalStorage
from tests.conftest import read_truth
from tests.prefect_api import flow_runs, run_log_lines, run_logs_at_info

pytestmark = pytest.mark.usefixtures("prefect_harness")
HAGRID = str(Path(sys.executable).with_name("hagrid"))


def _catalog(root: Path) -> Catalog:
    return Catalog(LocalStorage(root))


def snapshot(root: Path) -> dict[str, list[dict]]:
    """The catalog's content, ignoring which run and batch wrote each row."""
    cat = _catalog(root)
    out = {}
    for table, key in (("submissions", "submission_id"), ("images", "image_id")):
        rows = cat.read_table(table).drop_columns(list(RUN_COLUMNS)).to_pylist()
        out[table] = sorted(rows, key=lambda r: r[key])
    out["objects"] = cat.root.list("objects")
    return out


@pytest.fixture(scope="module")
def ingested(crowd_batch: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("root")
    with run_logs_at_info():
        summary = ingest(source=str(crowd_batch),
                         submissions=str(crowd_batch / "submissions.csv"), root=str(root),
                         commit_every=40, chunk_size=16)
    return root, summary


def test_the_run_is_named_after_its_batch_and_logs_its_progress_to_the_ui(crowd_batch,
                                                                          ingested):
    root, summary = ingested
    [run] = [r for r in flow_runs("ingest") if r.parameters.get("root") == str(root)]
    assert run.name == f"ingest {crowd_batch.name}"
    lines = run_log_lines(run.id)
    windows = -(-summary["inputs"] // 40)
    assert f"ingest {crowd_batch} (table {crowd_batch / 'submissions.csv'}) into {root}" in lines
    assert [ln for ln in lines if ln.startswith("window ")] == [
        f"window {w} of {windows} committed: {min(40 * w, summary['inputs'])} of "
        f"{summary['inputs']} inputs ingested" for w in range(1, windows + 1)]
    assert any(ln.startswith("ingest done in ") and f"{summary['accepted']} accepted" in ln
               for ln in lines), lines


def test_every_input_gets_the_planted_outcome_and_reason(crowd_batch, ingested):
    root, summary = ingested
    truth = read_truth(crowd_batch)
    subs = _catalog(root).read_table("submissions").to_pylist()
    assert len(subs) == len(truth) == summary["inputs"]
    by_file = {r["file"]: r for r in subs}
    assert len(by_file) == len(subs), "every input exactly once"
    wrong = [(t["file"], t["kind"], t["expected_reason"], by_file[t["file"]]["reason"])
             for t in truth
             if (by_file[t["file"]]["outcome"], by_file[t["file"]]["reason"])
             != (t["expected_outcome"], t["expected_reason"])]
    assert wrong == []
    for t in truth:
        if t["duplicate_of_file"]:
            kept = by_file[t["duplicate_of_file"]]
            assert by_file[t["file"]]["duplicate_of"] == kept["image_id"], t["file"]


def test_accepted_images_are_stored_content_addressed_with_pseudonymous_users(ingested):
    root, summary = ingested
    cat = _catalog(root)
    images = cat.read_table("images").to_pylist()
    assert len(images) == summary["accepted"] > 0
    raw_users = set(cat.read_table("submissions").column("user_id").to_pylist())
    for img in images:
        data = (root / img["object_key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == img["sha256"]
        assert img["user_id"] not in raw_users and len(img["user_id"]) == 32
        assert min(img["width"], img["height"]) >= 720
    stored = set(cat.root.list("objects"))
    assert stored == {img["object_key"] for img in images}, "no bytes of rejected inputs kept"


def test_summary_counts_and_samples(ingested):
    _, summary = ingested
    assert summary["accepted"] + summary["rejected"] == summary["inputs"]
    assert sum(summary["reasons"].values()) == summary["rejected"]
    reasons = {p["reason"] for p in summary["sample_duplicates"]}
    assert {"exact_duplicate", "near_duplicate", "mirrored_duplicate"} <= reasons
    assert all(p["kept_file"] for p in summary["sample_duplicates"])


def test_rerun_over_the_same_source_adds_nothing(crowd_batch, ingested):
    root, _ = ingested
    before = snapshot(root)
    commits = _catalog(root).committed_batches()
    again = ingest(source=str(crowd_batch), submissions=str(crowd_batch / "submissions.csv"),
                   root=str(root))
    assert again["inputs"] == 0 and again["skipped_already_seen"] == len(before["submissions"])
    assert snapshot(root) == before
    assert _catalog(root).committed_batches() == commits


def test_a_second_batch_is_deduplicated_against_the_catalog(crowd_batch, ingested, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ingested[0], root)
    images = _catalog(root).read_table("images").to_pylist()[:3]
    subs = {r["image_id"]: r for r in _catalog(root).read_table("submissions").to_pylist()}
    batch = tmp_path / "batch2"
    batch.mkdir()
    lines = ["file,user_id,gesture"]
    for i, img in enumerate(images):
        shutil.copy(crowd_batch / subs[img["image_id"]]["file"], batch / f"again{i}.jpg")
        lines.append(f"again{i}.jpg,other-account,{img['gesture']}")
    (batch / "s.csv").write_text("\n".join(lines) + "\n")
    ingest(source=str(batch), submissions=str(batch / "s.csv"), root=str(root))
    new = [r for r in _catalog(root).read_table("submissions").to_pylist()
           if r["file"].startswith("again")]
    assert [(r["reason"], r["duplicate_of"]) for r in sorted(new, key=lambda r: r["file"])] == [
        ("exact_duplicate", img["image_id"]) for img in images]


def _cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    return env


def test_a_killed_run_resumes_to_the_same_catalog(crowd_batch, ingested, tmp_path):
    reference, _ = ingested
    root = tmp_path / "root"
    (root / "catalog").mkdir(parents=True)  # same salt as the reference, so same pseudonyms
    shutil.copy(reference / "catalog" / "_salt", root / "catalog" / "_salt")
    args = [HAGRID, "ingest", str(crowd_batch), "--submissions",
            str(crowd_batch / "submissions.csv"), "--root", str(root), "--commit-every", "8"]
    commits = root / "catalog" / "_commits"
    log = tmp_path / "first-run.log"
    for _attempt in range(3):  # a run that ended before its second commit starts again
        with log.open("wb") as err:
            proc = subprocess.Popen(args, env=_cli_env(tmp_path), stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if commits.is_dir() and len(list(commits.iterdir())) >= 2:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            break
        # it ended on its own: under load Prefect's temporary server can fail to start
        assert not (commits.is_dir() and any(commits.iterdir())), log.read_text()[-2000:]
    assert proc.poll() is None, f"the run never got going: {log.read_text()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(_catalog(root).read_table("submissions"))
    assert 0 < partial < len(read_truth(crowd_batch)), "the kill must land mid-run"
    done = subprocess.run(args, env=_cli_env(tmp_path), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert snapshot(root) == snapshot(reference)


@pytest.mark.parametrize("case", ["missing_source", "missing_table", "malformed_table"])
def test_cli_fails_clearly_only_when_the_source_is_broken(case, crowd_batch, tmp_path):
    source, table = crowd_batch, crowd_batch / "submissions.csv"
    if case == "missing_source":
        source = tmp_path / "nope"
    elif case == "missing_table":
        table = tmp_path / "nope.csv"
    else:
        table = tmp_path / "bad.csv"
        table.write_text("name,worker\nx.jpg,w1\n")
    done = subprocess.run([HAGRID, "ingest", str(source), "--submissions", str(table),
                           "--root", str(tmp_path / "root")],
                          env=_cli_env(tmp_path), capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr
