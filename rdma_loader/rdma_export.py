"""The exporter side of the RDMA transport: a model's files registered for remote read (pyverbs).

``RdmaExporter`` (the weight server's side) registers every model file for remote read and
listens with rdmacm; ``descriptor()`` is the only way its rkeys leave it, and the weight server
sends that only to a peer that passed the cluster-secret handshake. The puller's side,
``RdmaTransport``, is in ``rdma_loader.rdma``.

pyverbs 44 (Debian bookworm) holds the GIL in its blocking calls (a thread waiting in
``CMID.get_request`` freezes every other thread of its process), so listening and accepting
run in a child process (``_export_main``) and the weight server's TCP threads never stall. The
child maps each file itself (a private mmap, never written, so its pages are the page cache's)
and registers it in place with ``MR(pd, length, REMOTE_READ, address=...)``: no copy. Regions
that are not files on disk (no ``model_dir``) are copied once into a memfd the child maps the
same way.

pyverbs is imported only in the child; without it, or without an RDMA device, ``export_files``
and ``attach`` raise ``RdmaUnavailableError``. Standard library otherwise.
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
from pathlib import Path
from typing import Any

from rdma_loader.errors import RdmaUnavailableError
from rdma_loader.rdma import DEFAULT_DEPTH, DEFAULT_PORT, RdmaDescriptor, RemoteRegion, import_pyverbs

log = logging.getLogger(__name__)


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
            [sys.executable, "-c", "from rdma_loader.rdma_export import _export_main; _export_main()", json.dumps(config)],
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
        v = self._v = import_pyverbs()
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
