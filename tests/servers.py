"""Real servers on loopback for integration tests: S3-protocol, Prefect and Label Studio servers.

Each helper is a context manager that starts the server, yields how to reach it and stops it on
exit, leaving no thread or process behind. ``tests/conftest.py`` wraps them in pytest fixtures.
Everything binds to 127.0.0.1 only; nothing reads or writes ``~/.prefect`` or ``~/.aws``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
PREFECT_STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test S3 server listens and the dummy credentials to use with it."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    def client(self) -> Any:
        """A boto3 S3 client bound to this endpoint with explicit dummy credentials.

        ``proxies={}`` keeps an ``HTTP_PROXY`` from the environment off loopback traffic.
        """
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(proxies={}),
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point a subprocess's boto3 at this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }


@contextmanager
def moto_s3_server() -> Iterator[S3Endpoint]:
    """Run moto's S3-protocol server in a thread on a free loopback port.

    moto keeps its state in process-wide backends, so the state is reset on start: a test never
    sees the buckets of an earlier one. Credentials are passed explicitly, never set in
    ``os.environ``.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = S3Endpoint(endpoint_url=f"http://{host}:{port}")
        reset = urllib.request.Request(f"{endpoint.endpoint_url}/moto-api/reset", method="POST")
        open_direct(reset, timeout=10).close()
        yield endpoint
    finally:
        server.stop()


def open_direct(request: str | urllib.request.Request, *, timeout: float) -> Any:
    """``urlopen`` that ignores any ``HTTP_PROXY`` setting: loopback servers are reached directly."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(request, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def isolated_prefect_env(home: Path, *, api_url: str | None = None) -> dict[str, str]:
    """This process's environment without any ``PREFECT_*`` variable, plus an isolated home.

    Every subprocess of a Prefect test should get this, so no profile, database or API setting
    from the developer's machine leaks in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), LOOPBACK, "localhost"]))
    env.update(
        {
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        }
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def prefect_cli() -> str:
    """The ``prefect`` executable of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("prefect"))


@contextmanager
def prefect_server(home: Path, *, ui: bool = False) -> Iterator[str]:
    """Run ``prefect server start`` on a free loopback port; yield its API URL.

    ``ui``: serve the web UI too (at the API URL without ``/api``), for screenshot tests.

    The database is ``<home>/prefect.db`` (Prefect's default under ``PREFECT_HOME``, set
    explicitly) and the server's output goes to ``<home>/prefect-server.log``.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://{LOOPBACK}:{port}/api"
    command = [prefect_cli(), "server", "start", "--host", LOOPBACK, "--port", str(port)]
    command += ["--analytics-off"] if ui else ["--no-ui", "--analytics-off"]
    log = home / "prefect-server.log"
    env = isolated_prefect_env(home)
    if ui:  # the UI's scripts call the API at this address (default: port 4200)
        env["PREFECT_UI_API_URL"] = api_url
    with _process_group(command, env=env, log=log, cwd=home) as server:
        _wait_healthy(f"{api_url}/health", server=server, log=log)
        yield api_url


@contextmanager
def served_deployments(
    command: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a long-lived command (such as one serving deployments) in its own process group.

    Its output goes to ``log``; the whole group is terminated on exit. Prefect also reads
    ``.env``, ``prefect.toml`` and ``pyproject.toml`` ``[tool.prefect]`` from ``cwd``.
    """
    with _process_group(command, env=env, log=log, cwd=cwd) as process:
        yield process


@contextmanager
def _process_group(
    command: list[str], *, env: Mapping[str, str], log: Path, cwd: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` as the leader of a new session; SIGTERM then SIGKILL its group on exit."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(
    process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM the process group led by ``process``; SIGKILL the group after the leader exits.

    The leader gets ``timeout`` seconds to shut down cleanly; whatever of its group is still
    around after that (stragglers the leader did not wait for) is killed.
    """
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_healthy(url: str, *, server: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the log tail if the server dies or hangs."""
    deadline = time.monotonic() + PREFECT_STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}:\n{log_tail(log)}")
        try:
            with open_direct(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no answer from {url} in {PREFECT_STARTUP_TIMEOUT_S} s:\n{log_tail(log)}")


def log_tail(log: Path, *, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    if not log.exists():
        return f"(no log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


LABEL_STUDIO_VENV = Path(__file__).resolve().parents[1] / ".venv-ls"
LABEL_STUDIO_TEMPLATE_DB = LABEL_STUDIO_VENV / "template" / "label_studio.sqlite3"
LABEL_STUDIO_ADMIN = "admin@example.com"
# Health polls of PREFECT_STARTUP_TIMEOUT_S each: a start without the template database migrates
# for 30 s on an idle 2-core machine and took 51 s on a busy one.
LABEL_STUDIO_STARTUP_POLLS = 3


@dataclass(frozen=True)
class LabelStudioEndpoint:
    """Where a test Label Studio server listens, its admin account and its local-files root."""

    url: str
    token: str
    username: str
    password: str
    document_root: Path


def label_studio_cli() -> Path:
    """The ``label-studio`` executable of ``.venv-ls``; a clear error when it is not installed.

    The server lives in its own virtual environment because its pins conflict with the
    pipeline's; ``scripts/setup_labelstudio.sh`` creates it.
    """
    cli = LABEL_STUDIO_VENV / "bin" / "label-studio"
    if not cli.is_file():
        raise RuntimeError(
            f"no Label Studio server at {cli}: run `bash scripts/setup_labelstudio.sh` first"
        )
    return cli


def label_studio_env(
    home: Path, *, document_root: Path, token: str, password: str
) -> dict[str, str]:
    """Environment for a loopback test server: sqlite under ``home``, no telemetry, fixed token.

    SSRF protection is off so the server may reach the moto S3 server on 127.0.0.1; that is
    only acceptable because this server binds to loopback and lives for one test session.
    ``HOME`` is moved too, since the server writes ``~/.config/label-studio``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), LOOPBACK, "localhost"]))
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
            "LABEL_STUDIO_USERNAME": LABEL_STUDIO_ADMIN,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "SSRF_PROTECTION_ENABLED": "false",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
    )
    return env


@contextmanager
def label_studio_server(home: Path, *, document_root: Path) -> Iterator[LabelStudioEndpoint]:
    """Run ``label-studio start`` on a free loopback port; yield how to reach it as its admin.

    The database is ``<home>/data/label_studio.sqlite3``, copied from the migrated template
    that ``scripts/setup_labelstudio.sh`` leaves in ``.venv-ls`` when there is one (a start
    then takes seconds instead of half a minute of migrations). Local files under
    ``document_root`` can be served; the output goes to ``<home>/label-studio.log``.
    """
    cli = label_studio_cli()
    (home / "data").mkdir(parents=True, exist_ok=True)
    if LABEL_STUDIO_TEMPLATE_DB.is_file():
        shutil.copyfile(LABEL_STUDIO_TEMPLATE_DB, home / "data" / "label_studio.sqlite3")
    token, password = secrets.token_hex(20), secrets.token_urlsafe(16)
    env = label_studio_env(home, document_root=document_root, token=token, password=password)
    port = free_port()
    command = [str(cli), "start", "--no-browser", "--internal-host", LOOPBACK, "--port", str(port)]
    log = home / "label-studio.log"
    with _process_group(command, env=env, log=log, cwd=home) as server:
        url = f"http://{LOOPBACK}:{port}"
        _wait_label_studio(f"{url}/health", server=server, log=log)
        yield LabelStudioEndpoint(
            url=url,
            token=token,
            username=LABEL_STUDIO_ADMIN,
            password=password,
            document_root=document_root,
        )


def _wait_label_studio(url: str, *, server: subprocess.Popen[bytes], log: Path) -> None:
    """``_wait_healthy``, given ``LABEL_STUDIO_STARTUP_POLLS`` times as long."""
    for poll in range(LABEL_STUDIO_STARTUP_POLLS):
        try:
            _wait_healthy(url, server=server, log=log)
            return
        except TimeoutError:
            if poll == LABEL_STUDIO_STARTUP_POLLS - 1:
                raise


@dataclass(frozen=True)
class DaskCluster:
    """A ``dask scheduler`` and its ``dask worker`` processes on 127.0.0.1."""

    address: str
    workers: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` (its whole process group): a machine lost mid-run."""
        _signal_group(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait()


def dask_cli() -> str:
    """The ``dask`` executable of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("dask"))


def can_hide_folders() -> bool:
    """Whether this machine lets a process hide a folder from itself: a private mount
    namespace (``unshare -m``, as root) with an empty tmpfs over it. Tried on a folder
    holding a file: hidden, the file must not show."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mark").write_text("seen")
        try:
            done = subprocess.run(hiding(Path(tmp), ["ls", "-A", tmp]), capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and done.stdout.strip() == ""


def hiding(folder: Path, command: list[str]) -> list[str]:
    """``command`` run where ``folder`` shows empty (an empty tmpfs mounted over it in a
    mount namespace of its own), as on a machine that does not share it."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=1m hidden "$0" && exec "$@"', str(folder), *command]


@contextmanager
def dask_cluster(home: Path, *, env: Mapping[str, str], n_workers: int = 2,
                 hidden: Path | None = None) -> Iterator[DaskCluster]:
    """Start a scheduler and ``n_workers`` single-threaded workers (no nanny: a killed worker
    stays dead) with ``env``; wait until every worker has joined; stop them all on exit.
    ``hidden``: a folder the workers see empty (``hiding``), as machines that share
    nothing with the test's."""
    from contextlib import ExitStack

    from distributed import Client

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://{LOOPBACK}:{port}"
    logs = [home / "scheduler.log", *(home / f"worker-{i}.log" for i in range(n_workers))]
    with ExitStack() as stack:
        stack.enter_context(_process_group(
            [dask_cli(), "scheduler", "--host", LOOPBACK, "--port", str(port), "--no-dashboard"],
            env=env, log=logs[0], cwd=home))
        commands = [[dask_cli(), "worker", address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", LOOPBACK, "--name", f"worker-{i}",
                     "--local-directory", str(home / f"worker-{i}")] for i in range(n_workers)]
        workers = [stack.enter_context(_process_group(
            command if hidden is None else hiding(hidden, command), env=env,
            log=logs[1 + i], cwd=home)) for i, command in enumerate(commands)]
        deadline = time.monotonic() + PREFECT_STARTUP_TIMEOUT_S
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(n_workers, timeout=PREFECT_STARTUP_TIMEOUT_S)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("dask scheduler did not answer:\n"
                                       + "\n".join(log_tail(p, lines=15) for p in logs)) from None
                time.sleep(0.5)
        yield DaskCluster(address, workers, logs)
