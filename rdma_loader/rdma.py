"""The RDMA transport: one-sided RDMA READs over a reliable-connected queue pair (pyverbs).

``RdmaTransport(descriptor)`` (the puller's side) connects a queue pair to an ``RdmaExporter``
(the weight server's side, in ``rdma_loader.rdma_export``) and ``fetch`` READs byte ranges
straight into the caller's buffer, ``depth`` work requests of up to ``chunk_bytes`` in flight.
The descriptor (``RdmaDescriptor``: address, port, each file's address, rkey and length) comes
from the exporter over the authenticated TCP connection (``open_transport``).

Written against pyverbs 44 (Debian bookworm), whose blocking calls hold the GIL. Hence the
puller uses its own queue pair and completion queue (rdmacm only for the connection:
``CMID.init_qp_attr`` + ``establish``), polled without blocking, so a fetch never holds the GIL
while it waits, a dead peer is reported within ``stall_timeout_s`` at worst, and one memory
region over the destination serves every READ (pyverbs' ``CMID.post_read`` would always write
to the start of its region).

pyverbs is imported only when a transport connects (or an exporter's child starts); without
it, or without an RDMA device, that raises ``RdmaUnavailableError``. Standard library otherwise.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


def import_pyverbs() -> Any:
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
        self._v = import_pyverbs()
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
