"""Real servers on loopback for integration tests: an S3-protocol server and a Prefect server.

Each helper is a context manager that starts the server, yields how to reach it and stops it on
exit, leaving no thread or process behind. ``tests/conftest.py`` wraps them in pytest fixtures.
Everything binds to 127.0.0.1 only; nothing reads or writes ``~/.prefect`` or ``~/.aws``.
"""

from __future__ import annotations

import os
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
def prefect_server(home: Path) -> Iterator[str]:
    """Run ``prefect server start`` on a free loopback port; yield its API URL.

    The database is ``<home>/prefect.db`` (Prefect's default under ``PREFECT_HOME``, set
    explicitly) and the server's output goes to ``<home>/prefect-server.log``.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://{LOOPBACK}:{port}/api"
    command = [prefect_cli(), "server", "start", "--host", LOOPBACK, "--port", str(port)]
    command += ["--no-ui", "--analytics-off"]
    log = home / "prefect-server.log"
    with _process_group(command, env=isolated_prefect_env(home), log=log, cwd=home) as server:
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
