"""A real Nightshift on loopback: web API, scheduler and Celery worker processes, each started
as a user would (``python -m nightshift web|scheduler|worker``), on a temporary data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY_MAX_LEN, free_port

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api(self) -> httpx.Client:
        """The API as the local CLI reaches it: with the token the web process wrote."""
        token_file = self.data_dir / "api-token"
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.is_file() else {}
        return httpx.Client(base_url=self.env["NIGHTSHIFT_API_URL"], timeout=30, headers=headers)

    def start(self, service: str, name: str | None = None, **env: str) -> subprocess.Popen:
        name = name or service
        log = (self.data_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "nightshift", service], env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.start("worker", name, NIGHTSHIFT_WORKER_NAME=name)

    def kill(self, name: str) -> None:
        """SIGKILL the process, then its process group (vLLM's engine processes), as a
        machine that loses power would."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.data_dir.glob("*.log")))

    def wait_until(self, what: str, check, timeout_s: float = 180, poll_s: float = 0.25):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            value = check()
            if value:
                return value
            time.sleep(poll_s)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{self.logs()}")

    def submit(self, lines: list[dict], model: str = "tiny") -> dict:
        data = "\n".join(json.dumps(line) for line in lines).encode()
        resp = self.api.post("/api/batches", files={"file": ("b.jsonl", data)}, data={"model": model})
        assert resp.status_code == 201, resp.text
        return resp.json()

    def task(self, task_id: int) -> dict:
        return self.api.get(f"/api/tasks/{task_id}").json()

    def wait_finished(self, task_id: int, timeout_s: float = 240) -> dict:
        return self.wait_until(f"task {task_id} to finish",
                               lambda: (t := self.task(task_id))["status"] in TERMINAL and t, timeout_s)

    def lines(self, task_id: int, kind: str) -> list[dict]:
        text = self.api.get(f"/api/tasks/{task_id}/{kind}.jsonl").text
        return [json.loads(line) for line in text.splitlines()]


def make_stack(tmp_path: Path, tiny_model: Path, broker_url: str | None) -> Stack:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "NIGHTSHIFT_DATA_DIR": str(data_dir),
        "NIGHTSHIFT_API_PORT": str(port),
        "NIGHTSHIFT_API_URL": f"http://127.0.0.1:{port}",
        "NIGHTSHIFT_DEMO_MODEL": "false",
        "NIGHTSHIFT_MODELS": json.dumps({"tiny": {"source": str(tiny_model), "dtype": "float32",
                                                  "max_model_len": TINY_MAX_LEN}}),
        "NIGHTSHIFT_ENFORCE_EAGER": "true",
        "NIGHTSHIFT_DISPATCH_INTERVAL_S": "0.5",
        "NIGHTSHIFT_WORKER_HEARTBEAT_S": "1",
        "NIGHTSHIFT_WORKER_LOST_AFTER_S": "5",
        "NIGHTSHIFT_RESULT_FLUSH_S": "0.2",
        "NIGHTSHIFT_CONFIG": str(tmp_path / "nightshift.toml"),
        "NIGHTSHIFT_ALWAYS_OPEN": "true",  # tests of the night window set their own
        "NIGHTSHIFT_YIELD_POLICY__PROBES": "[]",
    }
    (tmp_path / "nightshift.toml").write_text("# settings come from the environment in tests\n")
    if broker_url:
        env["NIGHTSHIFT_BROKER_URL"] = f"{broker_url}/0"
        env["NIGHTSHIFT_RESULT_BACKEND"] = f"{broker_url}/1"
    return Stack(data_dir, env)


@pytest.fixture
def stack_factory(tmp_path, tiny_model):
    stacks: list[Stack] = []

    def factory(broker_url: str | None = None, **env: str) -> Stack:
        stack = make_stack(tmp_path, tiny_model, broker_url)
        stack.env.update(env)
        stacks.append(stack)
        stack.start("web")
        stack.wait_until("the API", lambda: _healthy(stack), timeout_s=60)
        stack.start("scheduler")
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


def _healthy(stack: Stack) -> bool:
    try:
        return stack.api.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False
