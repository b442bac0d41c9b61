"""The README's "Your first night", command for command: ``nightshift run`` starts web,
scheduler and worker; the CLI submits the example batch to the generated demo model, waits,
and writes the results; SIGTERM stops every process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nightshift", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _wait_for_worker(env: dict, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "nightshift run exited early"
        try:
            token = Path(env["NIGHTSHIFT_DATA_DIR"], "api-token")  # as the local CLI reads it
            headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}
            workers = httpx.get(f"{env['NIGHTSHIFT_API_URL']}/api/status", headers=headers).json()["workers"]
            if any(w["state"] == "idle" for w in workers):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail("the worker did not come up within 90 s")


def test_first_night_from_the_readme(tmp_path):
    port = free_port()
    env = {**os.environ, "NIGHTSHIFT_DATA_DIR": str(tmp_path / "data"),
           "NIGHTSHIFT_API_PORT": str(port), "NIGHTSHIFT_API_URL": f"http://127.0.0.1:{port}",
           "NIGHTSHIFT_ENFORCE_EAGER": "true", "NIGHTSHIFT_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    log = (tmp_path / "run.log").open("w")
    launcher = subprocess.Popen([sys.executable, "-m", "nightshift", "run"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_worker(env, launcher)
        submitted = _cli(env, "submit", "batch", "examples/requests.jsonl", "--model", "tiny-random")
        assert submitted.returncode == 0, submitted.stderr
        assert "queued task 1: 3 requests" in submitted.stdout
        opened = _cli(env, "run-now")
        assert opened.returncode == 0 and "window open until" in opened.stdout, opened.stderr
        out = tmp_path / "out.jsonl"
        results = _cli(env, "results", "1", "-o", str(out), "--wait")
        assert results.returncode == 0, results.stderr + (tmp_path / "run.log").read_text()[-3000:]
        ids = [json.loads(line)["custom_id"] for line in out.read_text().splitlines()]
        assert ids == ["greeting", "haiku", "code"]
        assert (tmp_path / "out.errors.jsonl").read_text() == ""
        status = _cli(env, "status")
        assert "succeeded 1" in status.stdout and "tiny-random" in status.stdout
    finally:
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
    assert code == 0
    assert _processes_with(f"NIGHTSHIFT_DATA_DIR={tmp_path / 'data'}".encode()) == []


def _processes_with(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker`` (the launcher's children do)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_cli_reports_an_unreachable_api_clearly(tmp_path):
    env = {**os.environ, "NIGHTSHIFT_API_URL": f"http://127.0.0.1:{free_port()}",
           "NIGHTSHIFT_DATA_DIR": str(tmp_path)}
    result = _cli(env, "status")
    assert result.returncode == 1 and "not reachable" in result.stderr and "make run" in result.stderr
