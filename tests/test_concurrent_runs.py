"""Real `hagrid` processes on one dataset root: refusal, waiting, dead runs, file modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.catalog import Catalog
from tasks.integrity import check_root
from tasks.lock import LOCK_KEY
from tasks.storage import LocalStorage
from tests.conftest import read_truth

HAGRID = str(Path(sys.executable).with_name("hagrid"))


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    env.pop("PREFECT_API_URL", None)
    return env


def _ingest_args(batch: Path, root: Path, *extra: str) -> list[str]:
    return [HAGRID, "ingest", str(batch), "--submissions", str(batch / "submissions.csv"),
            "--root", str(root), "--commit-every", "8", *extra]


def _wait_for_holder(root: Path, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    lock = root / LOCK_KEY
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def _temporary_servers(home: Path) -> list[int]:
    """Pids of Prefect temporary servers started with PREFECT_HOME=home."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmd and \
                f"PREFECT_HOME={home}".encode() in env.split(b"\0"):
            found.append(int(pid))
    return found


@pytest.mark.slow
def test_two_ingests_started_together_record_every_input_once(crowd_batch, tmp_path):
    root = tmp_path / "root"
    runs = [subprocess.Popen(_ingest_args(crowd_batch, root, "--json"), env=_env(tmp_path / n),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in ("a", "b")]
    results = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    for code, _out, err in results:
        assert code in (0, 2), err
        assert "Traceback" not in err
        if code == 2:
            assert "error:" in err and "locked by `ingest`" in err
    assert any(code == 0 for code, _o, _e in results)
    subs = Catalog(LocalStorage(root)).read_table("submissions").to_pylist()
    assert len(subs) == len(read_truth(crowd_batch)) == len({s["submission_id"] for s in subs})
    images = Catalog(LocalStorage(root)).read_table("images").column("image_id").to_pylist()
    assert len(images) == len(set(images))
    assert check_root(LocalStorage(root)) == []


@pytest.mark.slow
def test_a_run_is_refused_at_once_or_waits_while_another_holds_the_root(crowd_batch, tmp_path):
    from tests.test_lock import holder

    root = tmp_path / "root"
    root.mkdir()
    with holder(str(root), hold_s=25) as other:
        started = time.monotonic()
        refused = subprocess.run(_ingest_args(crowd_batch, root), env=_env(tmp_path / "b"),
                                 capture_output=True, text=True, timeout=300, check=False)
        refused_after = time.monotonic() - started
        waiting = subprocess.Popen(_ingest_args(crowd_batch, root, "--wait", "--json"),
                                   env=_env(tmp_path / "c"), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert waiting.poll() is None, "--wait waits for the holder"
        assert not (root / "catalog").exists()
        out, err = waiting.communicate(timeout=900)
        assert other.wait(timeout=60) == 0
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "error:" in refused.stderr and "locked by `holder-test`" in refused.stderr
    assert f"pid {other.pid}" in refused.stderr and "since" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused_after < 20, "refused before starting Prefect"
    assert waiting.returncode == 0, err
    assert '"accepted"' in out
    assert check_root(LocalStorage(root)) == []


@pytest.mark.slow
def test_the_next_run_removes_what_a_killed_run_left(crowd_batch, tmp_path):
    root, home = tmp_path / "root", tmp_path / "home"
    proc = subprocess.Popen(_ingest_args(crowd_batch, root), env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits = root / "catalog" / "_commits"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if commits.is_dir() and len(list(commits.iterdir())) >= 2:
            break
        time.sleep(0.05)
    assert _temporary_servers(home), "the CLI runs Prefect's temporary server"
    proc.send_signal(signal.SIGKILL)  # the CLI only, not its process group
    proc.wait()
    deadline = time.monotonic() + 30
    while _temporary_servers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _temporary_servers(home) == [], "the temporary server ends with the CLI"
    assert (root / LOCK_KEY).read_text(), "a dead run leaves its record in the lock"
    # what a killed run leaves: a temp file of an unfinished write, a staging folder,
    # table files of a batch that never committed
    (root / "objects" / "ab").mkdir(parents=True, exist_ok=True)
    (root / "objects" / "ab" / ".tmp-unfinished.jpg").write_bytes(b"x" * 100)
    (root / "releases" / ".staging-v9-0123abcd" / "shards").mkdir(parents=True)
    (root / "releases" / ".staging-v9-0123abcd" / "shards" / "train-000000.tar").write_bytes(b"x")
    (root / "catalog" / "images" / "99999999-dead.parquet").write_bytes(b"not committed")
    done = subprocess.run(_ingest_args(crowd_batch, root), env=_env(home), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert not (root / "objects" / "ab" / ".tmp-unfinished.jpg").exists()
    assert not (root / "releases" / ".staging-v9-0123abcd").exists()
    assert not (root / "catalog" / "images" / "99999999-dead.parquet").exists()
    assert (root / LOCK_KEY).read_text() == ""
    assert check_root(LocalStorage(root)) == []
    assert _temporary_servers(home) == []


@pytest.mark.slow
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(crowd_batch, tmp_path, umask, mode):
    root = tmp_path / "root"
    done = subprocess.run(_ingest_args(crowd_batch, root), env=_env(tmp_path / "h"),
                          capture_output=True, text=True, timeout=600, check=False,
                          preexec_fn=lambda: os.umask(umask))
    assert done.returncode == 0, done.stderr
    files = [p for p in (root / "objects").rglob("*") if p.is_file()]
    files += [p for p in (root / "catalog").rglob("*") if p.is_file()]
    assert files
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
