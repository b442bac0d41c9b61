"""The TCP transport against a weight server process: every byte, over parallel streams."""

from __future__ import annotations

import mmap

from rdma_loader.manifest import build_manifest
from rdma_loader.puller import Puller
from rdma_loader.sources import PeerSource
from rdma_loader.tcp import TcpTransport, split_ranges
from rdma_loader.transport import ByteRange
from tests.rdma_loader.conftest import SECRET, expected_bytes, make_random_model


def test_pulled_bytes_equal_the_files_bytes_over_parallel_streams(tmp_path, start_server):
    model = make_random_model(tmp_path / "model", [[3 << 20, 1 << 20, 4096], [2 << 20, 12]])
    server = start_server(model)
    transport = TcpTransport("127.0.0.1", server.port, SECRET, streams=4)
    manifest = transport.manifest()
    offsets, size = manifest.packed_layout()
    dest = mmap.mmap(-1, size)
    ranges = [ByteRange(t.file_index, t.offset, t.length, offsets[i]) for i, t in enumerate(manifest.tensors)]

    transport.fetch(ranges, memoryview(dest))

    assert transport.streams_used == 4 and len(transport.connections) == 4
    expected = expected_bytes(model, manifest)
    for i, t in enumerate(manifest.tensors):
        assert dest[offsets[i]:offsets[i] + t.length] == expected[t.name]
    transport.close()
    assert server.log_text().count("manifest sent") == 1


def test_puller_over_tcp_reports_where_the_bytes_came_from(tmp_path, start_server):
    model = make_random_model(tmp_path / "model", [[1 << 20] * 5])
    server = start_server(model, "--in-ram")
    peer = PeerSource("127.0.0.1", server.port, SECRET, streams=3, bandwidth_bytes_s=1e12, setup_s=0)
    manifest = build_manifest(model)

    result = Puller([peer], group_bytes=1 << 20).pull(manifest)

    (report,) = result.reports
    assert report.kind == "peer-tcp" and report.error == ""
    assert report.verified_bytes == report.requested_bytes == manifest.total_bytes
    assert report.verified_tensors == 5 and result.refetched == ()
    expected = expected_bytes(model, manifest)
    assert all(bytes(view) == expected[t.name] for t, view in result.tensors())


def test_split_ranges_balances_bytes_and_keeps_order():
    ranges = [ByteRange(0, 100, 10, 0), ByteRange(0, 200, 30, 64), ByteRange(1, 8, 0, 128)]
    parts = split_ranges(ranges, 4)
    assert [sum(r.length for r in p) for p in parts] == [10, 10, 10, 10]
    flat = [r for p in parts for r in p]
    assert flat[0] == ByteRange(0, 100, 10, 0)
    assert flat[1:4] == [ByteRange(0, 200, 10, 64), ByteRange(0, 210, 10, 74), ByteRange(0, 220, 10, 84)]
    assert sum(r.length for r in flat) == 40
    assert split_ranges([ByteRange(0, 0, 5, 0)], 3) == [[ByteRange(0, 0, 2, 0)], [ByteRange(0, 2, 2, 2)],
                                                        [ByteRange(0, 4, 1, 4)]]
