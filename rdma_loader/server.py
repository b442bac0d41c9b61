"""The weight server: one model's safetensors bytes, served to peers that know the cluster secret.

``WeightServer(model_dir, secret)`` builds the manifest (hashing every tensor once), keeps the
files open for ``sendfile`` from the page cache (or, with ``in_ram=True``, reads them into an
in-RAM copy served with ``sendall``), and serves each client on its own thread: first the
handshake of ``rdma_loader.protocol``, then ``manifest``, ``read``, ``rdma-info`` and
``rdma-connect`` requests. Before the handshake succeeds nothing is served. A ``read`` is
refused unless every range lies inside one tensor of the manifest (headers included: nobody
reads the JSON header through us, only tensor bytes).

RDMA exporter hook
------------------
The RDMA side (``rdma_loader.rdma_export.RdmaExporter``; the puller's half is
``rdma_loader.rdma``) plugs in as an object passed as ``rdma_exporter=``; the server never
imports pyverbs itself. The object must provide (see ``RdmaExporter``):

``attach(manifest, regions) -> None``
    Called once by ``start()``, before any client is served. ``regions[i]`` is a read-only
    ``memoryview`` of the whole of file ``manifest.files[i]`` (header included, so manifest
    offsets index it directly): an ``mmap`` of the file, or the in-RAM copy. The exporter
    registers it (or copies it into its own memory region) for remote read.
``descriptor() -> dict``
    A JSON-able description of the endpoint (address, port or GID, rkeys, the address of each
    file's region...). Sent only to an authenticated client, as the reply to
    ``{"op": "rdma-info"}``: ``{"op": "rdma-info", "descriptor": <it>}``.
``connect(params: dict) -> dict``
    The server side of an out-of-band queue-pair exchange: ``params`` is what the client sent
    in ``{"op": "rdma-connect", "params": ...}``; the returned dict is sent back as
    ``{"op": "rdma-connect", "reply": <it>}``. It runs on that client's thread and may block
    until the queue pair is ready. An exception it raises is logged and answered with
    ``{"op": "error", "code": "no-rdma"}``, and the TCP connection stays usable.
``close() -> None``
    Called by ``WeightServer.close()``.

Without an exporter both RDMA requests are answered ``{"op": "error", "code": "no-rdma"}``
(``RdmaUnavailableError`` on the client). Standard library only.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import mmap
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rdma_loader.errors import AuthenticationError, TransportError
from rdma_loader.manifest import Manifest, build_manifest, weight_files
from rdma_loader.protocol import (
    read_secret,
    recv_message,
    send_error,
    send_message,
    server_handshake,
)

log = logging.getLogger(__name__)

MAX_RANGES_PER_READ = 100_000
MAX_CONNECTIONS = 256  # beyond this, new connections are closed at once (no thread each)


@runtime_checkable
class RdmaExporter(Protocol):
    name: str

    def attach(self, manifest: Manifest, regions: Sequence[memoryview]) -> None: ...

    def descriptor(self) -> dict[str, Any]: ...

    def connect(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class ServerStats:
    """Counters, for logs, tests and the registry's advertisement."""

    connections: int = 0
    authenticated: int = 0
    auth_failures: int = 0
    manifests_sent: int = 0
    ranges_refused: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class WeightServer:
    def __init__(self, model_dir: Path, secret: bytes | str, host: str = "127.0.0.1", port: int = 0,
                 in_ram: bool = False, rdma_exporter: RdmaExporter | None = None,
                 handshake_timeout_s: float = 10.0, idle_timeout_s: float = 300.0,
                 max_bytes_per_s: float | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.paths = weight_files(self.model_dir)
        self.secret = read_secret(secret)
        self.host, self.port = host, port
        self.in_ram = in_ram
        self.rdma_exporter = rdma_exporter
        self.handshake_timeout_s, self.idle_timeout_s = handshake_timeout_s, idle_timeout_s
        self.stats = ServerStats()
        self._pacer = _Pacer(max_bytes_per_s) if max_bytes_per_s else None  # spare the owner's link
        self.manifest: Manifest | None = None
        self._regions: list[memoryview] = []
        self._keep: list[Any] = []  # mmaps and copies behind the regions
        self._bounds: list[tuple[list[int], list[int]]] = []  # per file: tensor starts, ends
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    # --- lifecycle ---

    def start(self) -> WeightServer:
        self.manifest = build_manifest(self.model_dir)
        self._bounds = _tensor_bounds(self.manifest)
        self._map_files()
        if self.rdma_exporter is not None:
            self.rdma_exporter.attach(self.manifest, self._regions)
        listener = socket.create_server((self.host, self.port), backlog=128, reuse_port=False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="weight-server", daemon=True).start()
        log.info("serving %s (%d tensors, %d bytes, fingerprint %s) on %s:%d", self.model_dir,
                 len(self.manifest.tensors), self.manifest.total_bytes, self.manifest.fingerprint,
                 self.host, self.port)
        return self

    def _map_files(self) -> None:
        for path in self.paths:
            with path.open("rb") as fh:
                if self.in_ram:
                    data = bytearray(path.stat().st_size)
                    fh.readinto(data)
                else:
                    data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._keep.append(data)
            self._regions.append(memoryview(data).toreadonly())

    def wait(self) -> None:
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        if self.rdma_exporter is not None:
            self.rdma_exporter.close()

    # --- serving ---

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return  # closed
            self.stats.add(connections=1)
            if not self._slots.acquire(blocking=False):
                log.warning("refused %s:%d: %d connections already open", peer[0], peer[1], MAX_CONNECTIONS)
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                             name=f"weights-{peer[0]}:{peer[1]}").start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        who = f"{peer[0]}:{peer[1]}"
        files: list[Any] = []
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.handshake_timeout_s)
            server_handshake(conn, self.secret)
            self.stats.add(authenticated=1)
            conn.settimeout(self.idle_timeout_s)
            while self._handle(conn, recv_message(conn), who, files):
                pass
        except AuthenticationError as exc:
            self.stats.add(auth_failures=1)
            log.warning("refused %s: %s", who, exc)
        except (TransportError, OSError) as exc:
            log.info("connection from %s ended: %s", who, exc)
        except Exception:  # one client's surprise must not take the server down; logged
            log.exception("unexpected error serving %s", who)
        finally:
            for fh in files:
                fh.close()
            conn.close()
            self._slots.release()

    def _handle(self, conn: socket.socket, message: dict[str, Any], who: str, files: list[Any]) -> bool:
        op = message["op"]
        if op == "bye":
            return False
        if op == "manifest":
            assert self.manifest is not None
            send_message(conn, {"op": "manifest", "manifest": self.manifest.to_json()})
            self.stats.add(manifests_sent=1)
            log.info("manifest sent to %s", who)
        elif op == "read":
            self._read(conn, message, who, files)
        elif op in ("rdma-info", "rdma-connect"):
            self._rdma(conn, message, who)
        else:
            send_error(conn, "bad-request", f"unknown op {op!r}")
        return True

    def _read(self, conn: socket.socket, message: dict[str, Any], who: str, files: list[Any]) -> None:
        ranges, problem = self._check_ranges(message.get("ranges"))
        if problem:
            self.stats.add(ranges_refused=1)
            log.warning("refused a read from %s: %s", who, problem)
            send_error(conn, "range", problem)
            return
        total = sum(length for _, _, length in ranges)
        send_message(conn, {"op": "data", "length": total})
        if not self.in_ram and not files:
            files.extend(path.open("rb") for path in self.paths)
        for file_index, offset, length in ranges:
            for start, size in _chunks(offset, length, _PACED_CHUNK if self._pacer else length):
                if self._pacer is not None:
                    self._pacer.wait(size)
                if self.in_ram:
                    conn.sendall(self._regions[file_index][start:start + size])
                else:
                    conn.sendfile(files[file_index], start, size)
        self.stats.add(bytes_sent=total)

    def _check_ranges(self, raw: Any) -> tuple[list[tuple[int, int, int]], str]:
        if not isinstance(raw, list) or len(raw) > MAX_RANGES_PER_READ:
            return [], f"read.ranges: a list of at most {MAX_RANGES_PER_READ} [file, offset, length]"
        ranges = []
        for i, item in enumerate(raw):
            if (not isinstance(item, list) or len(item) != 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)):
                return [], f"read.ranges[{i}]: [file_index, offset, length] of non-negative integers"
            file_index, offset, length = item
            if not self._inside_a_tensor(file_index, offset, length):
                return [], (f"read.ranges[{i}]: bytes {offset}..{offset + length} of file {file_index} "
                            f"are not inside one tensor of the manifest")
            ranges.append((file_index, offset, length))
        return ranges, ""

    def _inside_a_tensor(self, file_index: int, offset: int, length: int) -> bool:
        if file_index >= len(self._bounds):
            return False
        starts, ends = self._bounds[file_index]
        i = bisect.bisect_right(starts, offset) - 1
        return i >= 0 and offset + length <= ends[i]

    def _rdma(self, conn: socket.socket, message: dict[str, Any], who: str) -> None:
        if self.rdma_exporter is None:
            send_error(conn, "no-rdma", "this server has no RDMA exporter")
            return
        try:
            if message["op"] == "rdma-info":
                reply = {"op": "rdma-info", "descriptor": self.rdma_exporter.descriptor()}
            else:
                reply = {"op": "rdma-connect", "reply": self.rdma_exporter.connect(message.get("params") or {})}
        except Exception as exc:  # the exporter is a plug-in; its failure is this request's only
            log.exception("RDMA exporter failed for %s", who)
            send_error(conn, "no-rdma", f"RDMA exporter failed: {exc}")
            return
        send_message(conn, reply)
        log.info("%s sent to %s", message["op"], who)


_PACED_CHUNK = 1024 * 1024


def _chunks(offset: int, length: int, chunk: int) -> list[tuple[int, int]]:
    step = max(chunk, 1)
    return [(start, min(step, offset + length - start)) for start in range(offset, offset + length, step)]


class _Pacer:
    """Caps the bytes per second of the whole server (all clients together): each chunk waits
    for its slot; idle time does not bank credit for a later burst."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self, nbytes: int) -> None:
        now = time.monotonic()
        with self.lock:
            slot = max(self.next_at, now)
            self.next_at = slot + nbytes / self.bytes_per_s
        if slot > now:
            time.sleep(slot - now)


def _tensor_bounds(manifest: Manifest) -> list[tuple[list[int], list[int]]]:
    bounds: list[tuple[list[int], list[int]]] = [([], []) for _ in manifest.files]
    for t in sorted(manifest.tensors, key=lambda t: (t.file_index, t.offset)):
        starts, ends = bounds[t.file_index]
        starts.append(t.offset)
        ends.append(t.offset + t.length)
    return bounds


def secret_from(path: Path | None, env_value: str | None) -> bytes:
    """The cluster secret from a file (first) or an environment value already read."""
    if path is not None:
        return read_secret(Path(path).read_bytes())
    if env_value:
        return read_secret(env_value)
    raise ValueError("cluster secret: pass --secret-file PATH or set NIGHTSHIFT_CLUSTER_SECRET")


def main(argv: list[str] | None = None) -> int:
    """``python3 -m rdma_loader MODEL_DIR``: the same server without Nightshift installed
    (for the Soft-RoCE VM). Prints one JSON line when ready: host, port, fingerprint."""
    import os

    parser = argparse.ArgumentParser(prog="python3 -m rdma_loader")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-file", type=Path)
    parser.add_argument("--in-ram", action="store_true", help="serve from an in-RAM copy")
    parser.add_argument("--max-bytes-per-s", type=float, help="cap the upload (the owner's link)")
    parser.add_argument("--rdma-ip", help="also export over RDMA, listening (rdmacm) on this address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = secret_from(args.secret_file, os.environ.get("NIGHTSHIFT_CLUSTER_SECRET"))
    server = WeightServer(args.model_dir, secret, args.host, args.port, in_ram=args.in_ram,
                          max_bytes_per_s=args.max_bytes_per_s,
                          rdma_exporter=rdma_exporter(args.rdma_ip, args.model_dir)).start()
    announce(server)
    server.wait()
    return 0


def rdma_exporter(ip: str | None, model_dir: Path) -> RdmaExporter | None:
    """``rdma_loader.rdma_export.RdmaExporter`` on ``ip`` (imported only when asked for)."""
    if not ip:
        return None
    from rdma_loader.rdma_export import RdmaExporter as PyverbsExporter

    return PyverbsExporter(ip, model_dir=model_dir)


def announce(server: WeightServer) -> None:
    assert server.manifest is not None
    transports = ["tcp", "rdma"] if server.rdma_exporter is not None else ["tcp"]
    print(json.dumps({"event": "ready", "host": server.host, "port": server.port, "transports": transports,
                      "fingerprint": server.manifest.fingerprint,
                      "total_bytes": server.manifest.total_bytes}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
