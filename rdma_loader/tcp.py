"""The TCP transport: parallel authenticated streams, received straight into the caller's buffer.

``PeerConnection`` is one authenticated connection to a ``WeightServer``: it fetches the
manifest, the RDMA descriptor, and byte ranges. ``TcpTransport`` holds ``streams`` of them and
splits each ``fetch`` across them, one thread per stream; every byte goes from the socket into
the destination ``memoryview`` with ``recv_into`` (no intermediate ``bytes``). Standard library
only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rdma_loader.errors import PeerGoneError, TransportError, WeightLoaderError
from rdma_loader.manifest import Manifest
from rdma_loader.protocol import (
    client_handshake,
    raise_for_error,
    recv_into_exact,
    recv_message,
    send_message,
)
from rdma_loader.transport import ByteRange

DEFAULT_TIMEOUT_S = 30.0
_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class PeerConnection:
    """One authenticated connection to a weight server (not thread-safe: one user at a time)."""

    def __init__(self, host: str, port: int, secret: bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = (host, port)
        try:
            self.sock = socket.create_connection(self.address, timeout=timeout_s)
        except OSError as exc:
            raise PeerGoneError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER_BYTES)
        try:
            client_handshake(self.sock, secret)
        except BaseException:
            self.sock.close()
            raise

    def request(self, message: dict[str, Any], expected_op: str) -> dict[str, Any]:
        try:
            send_message(self.sock, message)
        except OSError as exc:
            raise PeerGoneError(f"sending to {self.address[0]}:{self.address[1]} failed: {exc}") from exc
        return raise_for_error(recv_message(self.sock), expected_op)

    def manifest(self) -> Manifest:
        return Manifest.from_json(self.request({"op": "manifest"}, "manifest").get("manifest"))

    def rdma_info(self) -> dict[str, Any]:
        """The server's RDMA exporter descriptor; ``RdmaUnavailableError`` when it has none."""
        return self.request({"op": "rdma-info"}, "rdma-info")["descriptor"]

    def rdma_connect(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hand our side of an out-of-band queue-pair exchange to the server's exporter."""
        return self.request({"op": "rdma-connect", "params": params}, "rdma-connect")["reply"]

    def read_into(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        """One request for all ``ranges``; the bytes land at their ``dest_offset``s."""
        if not ranges:
            return
        total = sum(r.length for r in ranges)
        reply = self.request({"op": "read", "ranges": [[r.file_index, r.offset, r.length] for r in ranges]},
                             "data")
        if reply.get("length") != total:
            raise TransportError(f"the peer announced {reply.get('length')} bytes, {total} were asked")
        for r in ranges:
            recv_into_exact(self.sock, dest[r.dest_offset:r.dest_offset + r.length])

    def close(self) -> None:
        try:
            send_message(self.sock, {"op": "bye"})
        except OSError:
            pass
        self.sock.close()


class TcpTransport:
    """``Transport`` over ``streams`` parallel authenticated TCP connections."""

    name = "tcp"

    def __init__(self, host: str, port: int, secret: bytes, streams: int = 4,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if streams < 1:
            raise ValueError(f"streams: at least 1 required, got {streams}")
        self.host, self.port = host, port
        self._pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="tcp-stream")
        self._lock = threading.Lock()
        self.connections: list[PeerConnection] = []
        try:
            for conn in self._pool.map(lambda _: PeerConnection(host, port, secret, timeout_s), range(streams)):
                self.connections.append(conn)
        except BaseException:
            self.close()
            raise
        self.streams_used = 0  # how many streams the last fetch kept busy (tests assert on it)

    def manifest(self) -> Manifest:
        return self.connections[0].manifest()

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None:
        parts = split_ranges(ranges, len(self.connections))
        self.streams_used = sum(1 for p in parts if p)
        futures = [self._pool.submit(conn.read_into, part, dest)
                   for conn, part in zip(self.connections, parts) if part]
        errors = [f.exception() for f in futures]
        failure = next((e for e in errors if e is not None), None)
        if failure is not None:
            self.close()  # a stream left mid-reply cannot be reused
            if isinstance(failure, WeightLoaderError):  # range refused, peer gone, ...
                raise failure
            raise PeerGoneError(f"a stream to {self.host}:{self.port} failed: {failure}") from failure

    def close(self) -> None:
        with self._lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            conn.close()
        self._pool.shutdown(wait=False)


def split_ranges(ranges: Sequence[ByteRange], streams: int) -> list[list[ByteRange]]:
    """Cut the ranges into ``streams`` parts of about equal bytes, splitting a range where a
    part fills up, and keeping each part's ranges in order (sequential reads on the server)."""
    total = sum(r.length for r in ranges)
    share = -(-total // streams) if total else 0
    parts: list[list[ByteRange]] = [[] for _ in range(streams)]
    index, room = 0, share
    for r in ranges:
        offset, dest, left = r.offset, r.dest_offset, r.length
        while left:
            if room == 0 and index < streams - 1:
                index, room = index + 1, share
            take = left if index == streams - 1 else min(left, room)
            parts[index].append(ByteRange(r.file_index, offset, take, dest))
            offset, dest, left, room = offset + take, dest + take, left - take, room - take
    return parts
