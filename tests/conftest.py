"""Fixtures shared by every test package: settings on a temporary data directory, the tiny
generated model, free loopback ports and a real redis-server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler.settings import ModelSpec, Settings

TINY_MAX_LEN = 1024


def require(condition: bool, reason: str) -> None:
    """Skip when a service is missing on a laptop; fail when CI is set (it must be there)."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data directory, with a model alias that needs no weights."""
    return Settings(
        data_dir=tmp_path / "data",
        demo_model=False,
        models={"tiny": ModelSpec(source=str(tmp_path / "no-weights"), max_model_len=TINY_MAX_LEN)},
        max_batch_bytes=64 * 1024,
        max_batch_lines=500,
        always_open=True,  # window tests build their own settings
        yield_policy={"probes": []},
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start within 10 s")
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def batch_line(custom_id: str, content: str = "hello", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": content}], **body}}


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server on a free loopback port; yields its base URL (no database)."""
    bindir = _postgres_bin()
    require(bindir is not None, "PostgreSQL is not installed (apt-get install postgresql)")
    # Not under pytest's tmp dir: as root, the server runs as 'postgres', who cannot enter it.
    base = Path(tempfile.mkdtemp(prefix="nightshift-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "nightshift",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             "-k", str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"postgresql+psycopg://nightshift@127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("PostgreSQL did not start within 30 s")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the shared server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"


WEB_MODELS = {"tiny": {"source": "/models/not-loaded-without-a-worker", "max_model_len": TINY_MAX_LEN}}


@pytest.fixture
def web_server(tmp_path):
    """`nightshift web` as a user starts it, on a free loopback port, with no worker: tests run
    the night in-process. Yields its URL and the settings of its data directory."""
    data, port = tmp_path / "data", free_port()
    env = {**os.environ, "NIGHTSHIFT_DATA_DIR": str(data), "NIGHTSHIFT_API_PORT": str(port),
           "NIGHTSHIFT_DEMO_MODEL": "false", "NIGHTSHIFT_MODELS": json.dumps(WEB_MODELS),
           "NIGHTSHIFT_CONFIG": str(tmp_path / "nightshift.toml")}
    (tmp_path / "nightshift.toml").write_text("")
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "nightshift", "web"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"the web process did not start:\n{(tmp_path / 'web.log').read_text()}")
        time.sleep(0.2)
    settings = Settings(data_dir=data, demo_model=False, models={k: ModelSpec(**v) for k, v in WEB_MODELS.items()})
    yield url, settings
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
