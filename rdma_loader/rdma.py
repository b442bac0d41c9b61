"""The RDMA transport: one-sided RDMA READs over a reliable-connected queue pair (pyverbs).

``RdmaExporter`` (the weight server's side) registers every model file for remote read and
listens with rdmacm; ``descriptor()`` is the only way its rkeys leave it, and the weight server
sends that only to a peer that passed the cluster-secret handshake. ``RdmaTransport(descriptor)``
(the puller's side) connects a queue pair to it and ``fetch`` READs byte ranges straight into
the caller's buffer, ``depth`` work requests of up to ``chunk_bytes`` in flight.

Written against pyverbs 44 (Debian bookworm), whose blocking calls hold the GIL (a thread
waiting in ``CMID.get_request`` freezes every other thread of its process). Hence:

- The exporter's listening and accepting run in a child process (``_export_main``), so the
  weight server's TCP threads never stall. The child maps each file itself (a private mmap,
  never written, so its pages are the page cache's) and registers it in place with
  ``MR(pd, length, REMOTE_READ, address=...)``: no copy. Regions that are not files on disk
  (no ``model_dir``) are copied once into a memfd the child maps the same way.
- The puller uses its own queue pair and completion queue (rdmacm only for the connection:
  ``CMID.init_qp_attr`` + ``establish``), polled without blocking, so a fetch never holds the
  GIL while it waits, a dead peer is reported within ``stall_timeout_s`` at worst, and one
  memory region over the destination serves every READ (pyverbs' ``CMID.post_read`` would
  always write to the start of its region).

pyverbs is imported only when an exporter starts or a transport connects; without it, or
without an RDMA device, those raise ``RdmaUnavailableError``. Standard library otherwise.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdma_loader.errors import PeerGoneError, RangeRefusedError, RdmaUnavailableError
from rdma_loader.transport import ByteRange

log = logging.getLogger(__name__)

DEFAULT_PORT = 7471
DEFAULT_DEPTH = 16
DEFAULT_CHUNK_BYTES = 4 << 20
# 4.096 us * 2**16 = 268 ms per try, 4 retries: a vanished peer fails the READs in about 1.3 s.
DEFAULT_ACK_TIMEOUT = 16
DEFAULT_RETRY_COUNT = 4
_ECONNREFUSED = 111


@dataclass(frozen=True)
class RemoteRegion:
    addr: int
    rkey: int
    length: int


@dataclass(frozen=True)
class RdmaDescriptor:
    """What a puller needs to READ from an exporter (``RdmaExporter.descriptor()``, as JSON)."""

    ip: str
    port: int
    depth: int  # READs the exporter accepts in flight per connection
    files: tuple[RemoteRegion, ...]

    def to_json(self) -> dict[str, Any]:
        return {"transport": "rdma", "ip": self.ip, "port": self.port, "depth": self.depth,
                "files": [{"addr": f.addr, "rkey": f.rkey, "length": f.length} for f in self.files]}

    @classmethod
    def from_json(cls, data: Any) -> RdmaDescriptor:
        """Validate a peer's descriptor; a bad one is this source failing (``RdmaUnavailableError``)."""
        if not isinstance(data, dict) or data.get("transport") != "rdma":
            raise RdmaUnavailableError(f"RDMA descriptor: expected a dict with transport 'rdma', got {data!r:.200}")
        ip, files = data.get("ip"), data.get("files")
        if not isinstance(ip, str) or not ip:
            raise RdmaUnavailableError(f"RDMA descriptor: ip must be an address string, got {ip!r}")
        port, depth = _int_field(data, "port", 1, 65535), _int_field(data, "depth", 1, 1 << 16)
        if not isinstance(files, list):
            raise RdmaUnavailableError(f"RDMA descriptor: files must be a list, got {files!r:.200}")
        regions = tuple(RemoteRegion(*(_int_field(f, key, 0, (1 << 64) - 1, f"files[{i}].")
                                       for key in ("addr", "rkey", "length")))
                        for i, f in enumerate(files))
        return cls(ip, port, depth, regions)


def _int_field(data: Any, key: str, low: int, high: int, where: str = "") -> int:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RdmaUnavailableError(f"RDMA descriptor: {where}{key} must be an integer in "
                                   f"[{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True)
class Read:
    """One RDMA READ work request: ``length`` bytes of remote file ``file_index`` at ``offset``."""

    file_index: int
    offset: int
    length: int
    dest_offset: int


def plan_reads(ranges: Sequence[ByteRange], file_lengths: Sequence[int], dest_bytes: int,
               chunk_bytes: int) -> list[Read]:
    """Split ``ranges`` into READs of at most ``chunk_bytes``, merging ranges that continue each
    other in both the file and ``dest``. Refuses, before anything is posted, a range beyond its
    file's registered length (``RangeRefusedError``) or beyond ``dest`` (``ValueError``)."""
    merged: list[list[int]] = []
    for r in ranges:
        if r.file_index >= len(file_lengths) or r.offset + r.length > file_lengths[r.file_index]:
            known = file_lengths[r.file_index] if r.file_index < len(file_lengths) else None
            raise RangeRefusedError(f"{r}: outside the peer's registered files (file "
                                    f"{r.file_index} has {known} bytes, {len(file_lengths)} files)")
        if r.dest_offset + r.length > dest_bytes:
            raise ValueError(f"{r}: ends past the destination buffer ({dest_bytes} bytes)")
        if r.length == 0:
            continue
        last = merged[-1] if merged else None
        if last and last[0] == r.file_index and last[1] + last[2] == r.offset and last[3] + last[2] == r.dest_offset:
            last[2] += r.length
        else:
            merged.append([r.file_index, r.offset, r.length, r.dest_offset])
    return [Read(f, off + start, min(chunk_bytes, length - start), dest + start)
            for f, off, length, dest in merged for start in range(0, length, chunk_bytes)]


def _pyverbs() -> Any:
    """The pyverbs modules, or ``RdmaUnavailableError`` naming what is missing."""
    try:
        import pyverbs.cm_enums as cm_enums
        import pyverbs.cmid as cmid
        import pyverbs.cq as cq
        import pyverbs.enums as enums
        import pyverbs.mr as mr
        import pyverbs.pd as pd
        import pyverbs.qp as qp
        import pyverbs.wr as wr
        from pyverbs.device import Context
        from pyverbs.pyverbs_error import PyverbsError
    except ImportError as exc:
        raise RdmaUnavailableError(f"pyverbs is not importable ({exc}); install python3-pyverbs "
                                   f"(rdma-core) to use the RDMA transport") from exc
    ns = type("pyverbs", (), {})
    for name, value in dict(cm=cm_enums, cmid=cmid, cq=cq, e=enums, mr=mr, pd=pd, qp=qp, wr=wr,
                            Context=Context, Error=PyverbsError).items():
        setattr(ns, name, value)
    return ns


# --- the puller's side -------------------------------------------------------------------------


class RdmaTransport:
    """``Transport`` over one RC queue pair to an ``RdmaExporter`` (not thread-safe)."""

    name = "rdma"

    def __init__(self, descriptor: dict[str, Any], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 depth: int = DEFAULT_DEPTH, connect_timeout_s: float = 30.0,
                 stall_timeout_s: float = 30.0, ack_timeout: int = DEFAULT_ACK_TIMEOUT,
                 retry_count: int = DEFAULT_RETRY_COUNT, control: Any = None) -> None:
        if chunk_bytes < 1 or depth < 1 or stall_timeout_s <= 0 or connect_timeout_s < 0:
            raise ValueError(f"chunk_bytes={chunk_bytes}, depth={depth}, stall_timeout_s="
                             f"{stall_timeout_s}, connect_timeout_s={connect_timeout_s}: "
                             f"sizes and timeouts must be positive")
        if not 1 <= ack_timeout <= 31 or not 0 <= retry_count <= 7:
            raise ValueError(f"ack_timeout={ack_timeout} (1..31), retry_count={retry_count} (0..7)")
        self.remote = RdmaDescriptor.from_json(descriptor)
        self.chunk_bytes, self.stall_timeout_s = chunk_bytes, stall_timeout_s
        self.depth = min(depth, self.remote.depth)
        self._ack_timeout, self._retry_count = ack_timeout, retry_count
        self._control = control  # the authenticated TCP connection the descriptor came over
        self._broken: str | None = None
        self._v = _pyverbs()
        self._cmid, self._cq, self._qp = self._connect(connect_timeout_s)

    def _connect(self, timeout_s: float) -> tuple[Any, Any, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._connect_once()
            except self._v.Error as exc:
                # The exporter may still be registering its files: rdmacm refuses until it listens.
                if getattr(exc, "error_code", None) == _ECONNREFUSED and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise RdmaUnavailableError(f"RDMA connect to {self.remote.ip}:{self.remote.port} "
                                           f"failed: {exc}") from exc

    def _connect_once(self) -> tuple[Any, Any, Any]:
        v, opened = self._v, []
        try:
            cmid = v.cmid.CMID(creator=v.cmid.AddrInfo(dst=self.remote.ip, dst_service=str(self.remote.port),
                                                       port_space=v.cm.RDMA_PS_TCP))
            opened.append(cmid)
            cq = v.cq.CQ(cmid.context, self.depth + 1, None, None, 0)
            opened.append(cq)
            cap = v.qp.QPCap(max_send_wr=self.depth, max_recv_wr=1, max_send_sge=1, max_recv_sge=1)
            qp = v.qp.QP(cmid.pd, v.qp.QPInitAttr(qp_type=v.e.IBV_QPT_RC, scq=cq, rcq=cq, cap=cap))
            opened.append(qp)
            cmid.connect(v.cmid.ConnParam(resources=self.depth, depth=self.depth, qp_num=qp.qp_num,
                                          retry=self._retry_count))
            self._ready(cmid, qp)
            cmid.establish()
            return cmid, cq, qp
        except BaseException:
            for obj in reversed(opened):
                obj.close()
            raise

    def _ready(self, cmid: Any, qp: Any) -> None:
        """Walk our own queue pair to RTS with the attributes rdmacm negotiated, and our timeouts."""
        e = self._v.e
        for state in (e.IBV_QPS_INIT, e.IBV_QPS_RTR, e.IBV_QPS_RTS):
            attr, mask = cmid.init_qp_attr(state)
            if state == e.IBV_QPS_RTS:
                attr.timeout, attr.retry_cnt = self._ack_timeout, self._retry_count
                mask |= e.IBV_QP_TIMEOUT | e.IBV_QP_RETRY_CNT
            qp.modify(attr, mask)

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        if self._broken:
            raise PeerGoneError(f"rdma://{self.remote.ip}:{self.remote.port}: {self._broken}")
        view = memoryview(dest).cast("B")
        if view.readonly:
            raise ValueError("dest: the destination buffer is read-only")
        reads = plan_reads(ranges, [f.length for f in self.remote.files], len(view), self.chunk_bytes)
        if not reads:
            return
        low = min(r.dest_offset for r in reads)
        high = max(r.dest_offset + r.length for r in reads)
        anchor = ctypes.c_char.from_buffer(view)  # pins the buffer's size while it is registered
        try:
            mr = self._v.mr.MR(self._cmid.pd, high - low, self._v.e.IBV_ACCESS_LOCAL_WRITE,
                               address=ctypes.addressof(anchor) + low)
        except self._v.Error as exc:
            del anchor
            raise RdmaUnavailableError(f"registering {high - low} destination bytes failed: {exc}") from exc
        try:
            self._run(reads, mr, low)
        except BaseException as exc:
            self._broken = f"a transfer failed ({exc})"
            self._stop_queue_pair()
            raise
        finally:
            mr.close()
            del anchor

    def _run(self, reads: list[Read], mr: Any, low: int) -> None:
        v, files = self._v, self.remote.files
        posted = done = 0
        last_progress, pause_s = time.monotonic(), 0.0
        while done < len(reads):
            while posted < len(reads) and posted - done < self.depth:
                r = reads[posted]
                sge = v.wr.SGE(mr.buf + r.dest_offset - low, r.length, mr.lkey)
                wr = v.wr.SendWR(wr_id=posted, opcode=v.e.IBV_WR_RDMA_READ, num_sge=1, sg=[sge],
                                 send_flags=v.e.IBV_SEND_SIGNALED)
                wr.set_wr_rdma(files[r.file_index].rkey, files[r.file_index].addr + r.offset)
                self._qp.post_send(wr)
                posted += 1
            count, completions = self._cq.poll(self.depth)
            for wc in completions[:count]:
                if wc.status != v.e.IBV_WC_SUCCESS:
                    raise PeerGoneError(f"rdma://{self.remote.ip}:{self.remote.port}: READ {wc.wr_id} "
                                        f"failed, {_wc_status(v, wc.status)} (vendor error {wc.vendor_err})")
            if count:
                done += count
                last_progress, pause_s = time.monotonic(), 0.0
                continue
            if time.monotonic() - last_progress > self.stall_timeout_s:
                raise PeerGoneError(f"rdma://{self.remote.ip}:{self.remote.port}: no READ completed "
                                    f"in {self.stall_timeout_s} s")
            # Sleep rather than spin: the GIL stays free and, under emulation, so does the CPU rxe needs.
            pause_s = min(0.002, pause_s * 2 or 0.00005)
            time.sleep(pause_s)

    def _stop_queue_pair(self) -> None:
        """Move the QP to the error state so nothing lands in ``dest`` once fetch has returned."""
        attr = self._v.qp.QPAttr()
        attr.qp_state = self._v.e.IBV_QPS_ERR
        try:
            self._qp.modify(attr, self._v.e.IBV_QP_STATE)
        except self._v.Error as exc:
            log.warning("moving the RDMA queue pair to the error state failed: %s", exc)

    def close(self) -> None:
        for obj in (self._qp, self._cq, self._cmid):
            try:
                obj.close()
            except self._v.Error as exc:
                log.debug("closing %s: %s", type(obj).__name__, exc)
        self._broken = self._broken or "closed"
        if self._control is not None:
            self._control.close()
            self._control = None


def _wc_status(v: Any, status: int) -> str:
    names = {getattr(v.e, n): n for n in dir(v.e) if n.startswith("IBV_WC_") and n.endswith("_ERR")}
    return names.get(status, f"status {status}")


def open_transport(conn: Any, manifest: Any, **options: Any) -> RdmaTransport:
    """The RDMA transport to the weight server behind ``conn`` (an authenticated
    ``PeerConnection``), checked against its ``manifest``. Owns and closes ``conn``."""
    try:
        descriptor = conn.rdma_info()
        remote = RdmaDescriptor.from_json(descriptor)
        sizes = [f.size_bytes for f in manifest.files]
        if [f.length for f in remote.files] != sizes:
            raise RdmaUnavailableError(f"RDMA descriptor: registered lengths {[f.length for f in remote.files]} "
                                       f"do not match the manifest's file sizes {sizes}")
        return RdmaTransport(descriptor, control=conn, **options)
    except BaseException:
        conn.close()
        raise


# --- the weight server's side ------------------------------------------------------------------


class RdmaExporter:
    """Registers a model's files for remote read and accepts RDMA connections to them.

    Plugged into ``WeightServer(rdma_exporter=...)`` (which calls ``attach``), or standalone
    with ``export_files(paths)``. ``model_dir`` lets ``attach`` register the files themselves
    (zero-copy, from the page cache); without it the server's regions are copied once.
    """

    name = "rdma"

    def __init__(self, ip: str, port: int = DEFAULT_PORT, *, model_dir: Path | str | None = None,
                 depth: int = DEFAULT_DEPTH, max_connections: int = 32, start_timeout_s: float = 120.0) -> None:
        if not 1 <= port <= 65535 or depth < 1 or max_connections < 1:
            raise ValueError(f"port={port} (1..65535), depth={depth}, max_connections={max_connections} (>= 1)")
        self.ip, self.port, self.depth = ip, port, depth
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.max_connections, self.start_timeout_s = max_connections, start_timeout_s
        self._child: subprocess.Popen[str] | None = None
        self._memfds: list[int] = []
        self._descriptor: RdmaDescriptor | None = None

    def attach(self, manifest: Any, regions: Sequence[memoryview]) -> None:
        if self.model_dir is not None:
            paths = [self.model_dir / f.name for f in manifest.files]
            for path, region in zip(paths, regions, strict=True):
                if path.stat().st_size != len(region):
                    raise RdmaUnavailableError(f"{path}: {path.stat().st_size} bytes on disk, the "
                                               f"server maps {len(region)}")
            self.export_files(paths)
            return
        for region in regions:
            fd = os.memfd_create("nightshift-rdma-region")
            self._memfds.append(fd)
            with open(fd, "wb", closefd=False) as out:
                out.write(region)
        self._start([{"fd": fd} for fd in self._memfds])

    def export_files(self, paths: Sequence[Path | str]) -> RdmaExporter:
        self._start([{"path": str(p)} for p in paths])
        return self

    def descriptor(self) -> dict[str, Any]:
        if self._descriptor is None:
            raise RdmaUnavailableError("the RDMA exporter has not exported anything yet (attach first)")
        return self._descriptor.to_json()

    def connect(self, params: dict[str, Any]) -> dict[str, Any]:
        raise RdmaUnavailableError("this exporter connects through rdmacm at the descriptor's ip and "
                                   "port; there is no out-of-band queue-pair exchange")

    def _start(self, sources: list[dict[str, Any]]) -> None:
        if self._child is not None:
            raise RuntimeError("RdmaExporter: already exporting")
        config = {"ip": self.ip, "port": self.port, "depth": self.depth, "parent_pid": os.getpid(),
                  "max_connections": self.max_connections, "sources": sources}
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._child = subprocess.Popen(
            [sys.executable, "-c", "from rdma_loader.rdma import _export_main; _export_main()", json.dumps(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env, pass_fds=self._memfds)
        try:
            reply = self._read_ready_line()
        except BaseException:
            self.close()
            raise
        self._descriptor = RdmaDescriptor(self.ip, self.port, self.depth, tuple(
            RemoteRegion(f["addr"], f["rkey"], f["length"]) for f in reply["files"]))

    def _read_ready_line(self) -> dict[str, Any]:
        assert self._child is not None and self._child.stdout is not None
        ready, _, _ = select.select([self._child.stdout], [], [], self.start_timeout_s)
        line = self._child.stdout.readline() if ready else ""
        try:
            reply = json.loads(line)
        except ValueError:
            reply = {"error": f"no ready line within {self.start_timeout_s} s (exit code "
                              f"{self._child.poll()}, output {line!r:.200})"}
        if not reply.get("ok"):
            raise RdmaUnavailableError(f"RDMA exporter on {self.ip}:{self.port}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self._child is not None:
            self._child.terminate()  # the kernel frees its queue pairs and regions with it
            try:
                self._child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            if self._child.stdout is not None:
                self._child.stdout.close()
            self._child = None
        for fd in self._memfds:
            os.close(fd)
        self._memfds.clear()
        self._descriptor = None


def _export_main() -> None:
    """The exporter's child process: register, listen, print one JSON line, accept for ever."""
    config = json.loads(sys.argv[1])
    # Die with the weight server (PR_SET_PDEATHSIG): nobody else may hold our rkeys' memory.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != config["parent_pid"]:
        sys.exit(0)
    try:
        endpoint = _Endpoint(config)
    except Exception as exc:  # any failure to start is reported to the parent, which raises it
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    print(json.dumps({"ok": True, "files": endpoint.regions}), flush=True)
    endpoint.serve_forever()


class _Endpoint:
    """The child's pyverbs state: the listening id, one region per file, accepted connections."""

    def __init__(self, config: dict[str, Any]) -> None:
        v = self._v = _pyverbs()
        self.depth, self.max_connections = config["depth"], config["max_connections"]
        cap = v.qp.QPCap(max_send_wr=1, max_recv_wr=1, max_send_sge=1, max_recv_sge=1)
        self.listen_id = v.cmid.CMID(
            creator=v.cmid.AddrInfo(src=config["ip"], src_service=str(config["port"]),
                                    port_space=v.cm.RDMA_PS_TCP, flags=v.cm.RAI_PASSIVE),
            qp_init_attr=v.qp.QPInitAttr(qp_type=v.e.IBV_QPT_RC, cap=cap))
        # rdmacm gives every id on a device the same protection domain: regions registered on
        # the listening id's PD are readable through every queue pair get_request creates.
        v.Context(cmid=self.listen_id)
        self.pd = v.pd.PD(self.listen_id)
        self.maps, self.mrs, self.anchors = [], [], []
        for source in config["sources"]:
            self._register(source)
        self.regions = [{"addr": mr.buf if mr else 0, "rkey": mr.rkey if mr else 0, "length": len(m) if m else 0}
                        for m, mr in zip(self.maps, self.mrs)]
        self.listen_id.listen()
        self.connections: deque[Any] = deque()

    def _register(self, source: dict[str, Any]) -> None:
        fd = source["fd"] if "fd" in source else os.open(source["path"], os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            # ACCESS_COPY: writable for ctypes, never written, so the pages stay the page cache's.
            m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY) if size else None
        finally:
            if "fd" not in source:
                os.close(fd)
        mr = None
        if m is not None:
            anchor = ctypes.c_char.from_buffer(m)
            self.anchors.append(anchor)
            mr = self._v.mr.MR(self.pd, size, self._v.e.IBV_ACCESS_REMOTE_READ, address=ctypes.addressof(anchor))
        self.maps.append(m)
        self.mrs.append(mr)

    def serve_forever(self) -> None:
        v = self._v
        while True:
            try:
                conn = self.listen_id.get_request()
            except v.Error as exc:  # one bad request must not end the exporter
                log.warning("RDMA get_request failed: %s", exc)
                time.sleep(0.1)
                continue
            try:
                conn.accept(v.cmid.ConnParam(resources=self.depth, depth=self.depth))
            except v.Error as exc:  # a peer that went away mid-handshake: drop it, keep serving
                log.warning("RDMA accept failed: %s", exc)
                conn.close()
                continue
            self.connections.append(conn)
            # pyverbs 44 never tells a synchronous id that its peer left: cap them, oldest out.
            while len(self.connections) > self.max_connections:
                self.connections.popleft().close()
