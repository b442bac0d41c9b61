"""Shared by the RDMA tests: is there a device, random files, exporter processes, free ports.

Standard library only (the Soft-RoCE VM has no pip packages).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import select
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IP = os.environ.get("NIGHTSHIFT_RDMA_TEST_IP", "10.99.0.1")
_ports = itertools.count(20000 + os.getpid() % 1000 * 20)


def rdma_missing() -> str | None:
    """Why the RDMA tests cannot run here, or None when they can."""
    devices = sorted(os.listdir("/sys/class/infiniband")) if os.path.isdir("/sys/class/infiniband") else []
    if not devices:
        return "no RDMA device (/sys/class/infiniband is empty); run `make test-rdma` (Soft-RoCE VM)"
    try:
        import pyverbs.device  # noqa: F401
    except ImportError as exc:
        return f"RDMA devices {devices} but pyverbs is not importable ({exc}); install python3-pyverbs"
    return None


def next_port() -> int:
    """rdmacm ports are their own space; each test takes a fresh one (no TIME_WAIT clashes)."""
    return next(_ports)


def write_random_files(folder: Path, sizes: list[int], seed: int) -> list[Path]:
    rng, paths = random.Random(seed), []
    for i, size in enumerate(sizes):
        path = folder / f"part-{i}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class ExporterProcess:
    """``exporter_proc.py`` in its own process; ``descriptor`` once it is listening."""

    def __init__(self, paths: list[Path], port: int, timeout_s: float = 120.0) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests/rdma/exporter_proc.py"), IP, str(port),
                                      *map(str, paths)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"exporter process gave no descriptor within {timeout_s} s")
        self.descriptor = json.loads(line)

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stdin.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
