"""Weight servers as real processes (``python -m rdma_loader.server``) on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"test-cluster-secret-0123456789abcdef"


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    fingerprint: str
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster-secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def start_server(tmp_path: Path, secret_file: Path) -> Iterator:
    """Start ``python -m rdma_loader.server MODEL_DIR`` and wait for its ready line."""
    started: list[ServerProcess] = []

    def start(model_dir: Path, *extra: str, secret: Path = secret_file) -> ServerProcess:
        log = tmp_path / f"server-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rdma_loader", str(model_dir), "--secret-file", str(secret), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"weight server did not start:\n{log.read_text()}")
        ready = json.loads(line)
        server = ServerProcess(proc, ready["port"], ready["fingerprint"], log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=10)


def write_safetensors(path: Path, header: dict, data: bytes, pad_to: int = 8) -> Path:
    """A safetensors file written by hand, so a test can make it lie."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % pad_to)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def make_random_model(model_dir: Path, tensor_bytes: list[list[int]], seed: int = 0) -> Path:
    """A model directory of random F32 tensors: one safetensors file per inner list, one tensor
    per size (bytes, a multiple of 4), and a config.json. Real files for every loader."""
    import random

    rng = random.Random(seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "random", "seed": seed}))
    for f, sizes in enumerate(tensor_bytes):
        header, cursor, chunks = {"__metadata__": {"format": "pt"}}, 0, []
        for t, size in enumerate(sizes):
            header[f"layer.{f}.{t}.weight"] = {"dtype": "F32", "shape": [size // 4],
                                               "data_offsets": [cursor, cursor + size]}
            chunks.append(rng.randbytes(size))
            cursor += size
        write_safetensors(model_dir / f"model-{f:05d}-of-{len(tensor_bytes):05d}.safetensors",
                          header, b"".join(chunks))
    return model_dir


def expected_bytes(model_dir: Path, manifest) -> dict[str, bytes]:
    files = [(model_dir / f.name).read_bytes() for f in manifest.files]
    return {t.name: files[t.file_index][t.offset:t.offset + t.length] for t in manifest.tensors}
