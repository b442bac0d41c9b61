"""Where a model's bytes can come from, and how long each source would take.

Every source estimates ``setup_s + size / bandwidth_bytes_s`` and the puller takes the fastest.
Bandwidths are measured where that is cheap and honest (a read probe of the local disk; what a
peer advertises from its own measurement) and otherwise configured, with defaults that are
deliberately unflattering to the network: a 10 GbE peer (~1.1 GB/s) loses to a local NVMe
(~2-3 GB/s), and on 1 GbE (~0.11 GB/s) a peer only wins against a spinning disk or a download.

Kinds, fastest first on a typical machine: ``resident`` (already in this process),
``host-cache`` (already in host RAM), ``peer-rdma``, ``local-disk``, ``peer-tcp``, ``remote``
(a model hub download: estimated, never implemented here, it raises a clear error).
Each source is also a ``Transport``: ``prepare(manifest)``, then ``fetch``, then ``close``.
Standard library only (the RDMA transport is imported lazily, and only when used).
"""

from __future__ import annotations

import enum
import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from rdma_loader.errors import RdmaUnavailableError, TransportError
from rdma_loader.manifest import Manifest, weight_files
from rdma_loader.tcp import PeerConnection, TcpTransport
from rdma_loader.transport import ByteRange, Transport


class SourceKind(enum.StrEnum):
    RESIDENT = "resident"
    HOST_CACHE = "host-cache"
    PEER_RDMA = "peer-rdma"
    LOCAL_DISK = "local-disk"
    PEER_TCP = "peer-tcp"
    REMOTE = "remote"


# Used only when nothing was measured or configured; see the module docstring.
DEFAULT_BANDWIDTH_BYTES_S = {
    SourceKind.RESIDENT: float("inf"),
    SourceKind.HOST_CACHE: 8e9,
    SourceKind.PEER_RDMA: 10e9,  # 100 Gb RoCE at ~80%
    SourceKind.LOCAL_DISK: 2e9,  # a PCIe 3 NVMe
    SourceKind.PEER_TCP: 1.1e9,  # 10 GbE at ~90%
    SourceKind.REMOTE: 50e6,  # a good home connection to a hub
}
DEFAULT_SETUP_S = {
    SourceKind.RESIDENT: 0.0, SourceKind.HOST_CACHE: 0.0, SourceKind.PEER_RDMA: 0.05,
    SourceKind.LOCAL_DISK: 0.001, SourceKind.PEER_TCP: 0.01, SourceKind.REMOTE: 2.0,
}
DISK_PROBE_BYTES = 16 * 1024 * 1024


class Source:
    """Base of every source: an estimate, and the ``Transport`` methods."""

    kind: SourceKind
    name = "source"

    def __init__(self, label: str, bandwidth_bytes_s: float | None = None, setup_s: float | None = None) -> None:
        if bandwidth_bytes_s is not None and bandwidth_bytes_s <= 0:
            raise ValueError(f"{label}: bandwidth_bytes_s must be above 0, got {bandwidth_bytes_s}")
        self.label = label
        self.bandwidth_bytes_s = bandwidth_bytes_s or DEFAULT_BANDWIDTH_BYTES_S[self.kind]
        self.setup_s = DEFAULT_SETUP_S[self.kind] if setup_s is None else setup_s

    def estimate_s(self, size_bytes: int) -> float:
        return self.setup_s + size_bytes / self.bandwidth_bytes_s

    def prepare(self, manifest: Manifest) -> None:
        """Connect or open files; ``TransportError`` when this source cannot serve ``manifest``."""

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} {self.bandwidth_bytes_s / 1e9:.2f} GB/s>"


class DiskSource(Source):
    """The model directory on this machine, read with ``preadv`` straight into the buffer."""

    kind = SourceKind.LOCAL_DISK
    name = "disk"

    def __init__(self, model_dir: Path, bandwidth_bytes_s: float | None = None, probe: bool = False) -> None:
        self.model_dir = Path(model_dir)
        if probe and bandwidth_bytes_s is None:
            bandwidth_bytes_s = probe_disk(self.model_dir)
        super().__init__(f"disk:{self.model_dir}", bandwidth_bytes_s)
        self._fds: list[int] = []

    def prepare(self, manifest: Manifest) -> None:
        for entry in manifest.files:
            path = self.model_dir / entry.name
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise TransportError(f"{self.label}: {entry.name} is missing: {exc}") from exc
            if size != entry.size_bytes:
                raise TransportError(f"{self.label}: {entry.name} has {size} bytes, the manifest "
                                     f"{entry.size_bytes}: another version of the model")
            self._fds.append(os.open(path, os.O_RDONLY))

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        for r in ranges:
            view, offset = dest[r.dest_offset:r.dest_offset + r.length], r.offset
            while view:
                try:
                    n = os.preadv(self._fds[r.file_index], [view], offset)
                except OSError as exc:
                    raise TransportError(f"{self.label}: read failed: {exc}") from exc
                if n == 0:
                    raise TransportError(f"{self.label}: file {r.file_index} ended at byte {offset}")
                view, offset = view[n:], offset + n

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def probe_disk(model_dir: Path, nbytes: int = DISK_PROBE_BYTES) -> float:
    """Read ``nbytes`` from the middle of the largest weight file: bytes per second. What is in
    the page cache reads at memory speed, and then the pull will too, so that is fair."""
    path = max(weight_files(Path(model_dir)), key=lambda p: p.stat().st_size)
    size = path.stat().st_size
    nbytes = min(nbytes, size)
    buf = memoryview(bytearray(nbytes))
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        os.preadv(fd, [buf], (size - nbytes) // 2)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return nbytes / max(elapsed, 1e-6)


class MemorySource(Source):
    """Bytes already in host RAM: one buffer per manifest file (a shared-memory copy, a file
    in /dev/shm mapped, the in-RAM copy of a local weight server)."""

    kind = SourceKind.HOST_CACHE
    name = "memory"

    def __init__(self, label: str, regions: Sequence[memoryview], bandwidth_bytes_s: float | None = None) -> None:
        super().__init__(label, bandwidth_bytes_s)
        self.regions = [memoryview(r).cast("B") for r in regions]

    def prepare(self, manifest: Manifest) -> None:
        sizes = [len(r) for r in self.regions]
        if sizes != [f.size_bytes for f in manifest.files]:
            raise TransportError(f"{self.label}: holds files of {sizes} bytes, not this manifest's")

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        for r in ranges:
            dest[r.dest_offset:r.dest_offset + r.length] = self.regions[r.file_index][r.offset:r.offset + r.length]


class ResidentSource(Source):
    """The model is already loaded here: nothing to move. The engine holder checks this before
    it ever pulls; as a source it only makes the estimate table complete."""

    kind = SourceKind.RESIDENT
    name = "resident"

    def prepare(self, manifest: Manifest) -> None:
        raise TransportError(f"{self.label}: resident weights are used in place, not pulled")


class RemoteSource(Source):
    """A model hub download. Estimated so the choice is honest; not implemented (no hub is
    reachable from here), so using it raises."""

    kind = SourceKind.REMOTE
    name = "remote"

    def prepare(self, manifest: Manifest) -> None:
        raise TransportError(f"{self.label}: downloading from a model hub is not implemented; "
                             f"put the model on a local disk or start a peer with serve-weights")


class PeerSource(Source):
    """A weight server over TCP (``transport="tcp"``) or RDMA (``"rdma"``)."""

    name = "peer"

    def __init__(self, host: str, port: int, secret: bytes, transport: str = "tcp", streams: int = 4,
                 bandwidth_bytes_s: float | None = None, setup_s: float | None = None,
                 timeout_s: float = 30.0) -> None:
        if transport not in ("tcp", "rdma"):
            raise ValueError(f"transport: 'tcp' or 'rdma', got {transport!r}")
        self.kind = SourceKind.PEER_TCP if transport == "tcp" else SourceKind.PEER_RDMA
        super().__init__(f"{transport}://{host}:{port}", bandwidth_bytes_s, setup_s)
        self.host, self.port, self.secret = host, port, secret
        self.transport_name, self.streams, self.timeout_s = transport, streams, timeout_s
        self.transport: Transport | None = None

    def prepare(self, manifest: Manifest) -> None:
        if self.transport_name == "tcp":
            tcp = TcpTransport(self.host, self.port, self.secret, self.streams, self.timeout_s)
            self.transport = tcp
            theirs = tcp.manifest()
        else:
            conn = PeerConnection(self.host, self.port, self.secret, self.timeout_s)
            try:
                theirs = conn.manifest()
                self.transport = open_rdma_transport(conn, theirs)
            except BaseException:
                conn.close()
                raise
        if theirs.fingerprint != manifest.fingerprint:
            raise TransportError(f"{self.label} serves fingerprint {theirs.fingerprint}, not "
                                 f"{manifest.fingerprint}")

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        if self.transport is None:
            raise TransportError(f"{self.label}: not prepared")
        self.transport.fetch(ranges, dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def open_rdma_transport(conn: PeerConnection, manifest: Manifest) -> Transport:
    """``rdma_loader.rdma.open_transport(conn, manifest)``: the RDMA engineer's entry point.
    On success the transport owns ``conn`` (and closes it in its ``close``); on an exception the
    caller closes it."""
    try:
        rdma = importlib.import_module("rdma_loader.rdma")
    except ImportError as exc:
        raise RdmaUnavailableError(f"the RDMA transport cannot be imported: {exc}") from exc
    return rdma.open_transport(conn, manifest)


def ranked(sources: Sequence[Source], size_bytes: int) -> list[tuple[float, Source]]:
    """Sources with their estimates, fastest first (ties keep the given order)."""
    return sorted(((s.estimate_s(size_bytes), s) for s in sources), key=lambda pair: pair[0])
