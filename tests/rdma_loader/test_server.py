"""The weight server as a real process: authentication, manifest, range checks, RDMA hook."""

from __future__ import annotations

import socket

import pytest

from rdma_loader.errors import AuthenticationError, RangeRefusedError, RdmaUnavailableError
from rdma_loader.manifest import build_manifest
from rdma_loader.protocol import recv_message, send_message
from rdma_loader.server import WeightServer
from rdma_loader.tcp import PeerConnection
from rdma_loader.transport import ByteRange
from tests.rdma_loader.conftest import SECRET, make_random_model


@pytest.fixture
def model(tmp_path):
    return make_random_model(tmp_path / "model", [[4096, 256, 1024]])


def test_wrong_secret_is_refused_and_nothing_is_served(model, start_server, tmp_path):
    server = start_server(model)
    with pytest.raises(AuthenticationError):
        PeerConnection("127.0.0.1", server.port, b"not-the-cluster-secret-at-all")
    with socket.create_connection(("127.0.0.1", server.port)) as raw:  # skip the handshake
        send_message(raw, {"op": "manifest"})
        reply = recv_message(raw)
        assert reply == {"op": "error", "code": "auth", "message": reply["message"]}
        assert raw.recv(1) == b""  # and the server hung up
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        send_message(raw, {"op": "read", "ranges": [[0, 8, 4]]})
        assert recv_message(raw)["code"] == "auth"
    PeerConnection("127.0.0.1", server.port, SECRET).close()  # the server is still fine
    log = server.log_text()
    assert log.count("refused") >= 2 and "manifest sent" not in log


def test_manifest_is_served_after_the_handshake(model, start_server):
    server = start_server(model)
    conn = PeerConnection("127.0.0.1", server.port, SECRET)
    manifest = conn.manifest()
    conn.close()
    assert manifest == build_manifest(model) and manifest.fingerprint == server.fingerprint


def test_ranges_outside_a_tensor_are_refused_and_the_connection_stays_usable(model, start_server):
    server = start_server(model)
    conn = PeerConnection("127.0.0.1", server.port, SECRET)
    manifest = conn.manifest()
    first, second = manifest.tensors[0], manifest.tensors[1]
    dest = memoryview(bytearray(8192))
    for bad in (ByteRange(0, 0, 8, 0),  # the header
                ByteRange(0, first.offset + first.length - 4, 8, 0),  # across two tensors
                ByteRange(0, manifest.files[0].size_bytes, 4, 0),  # past the end
                ByteRange(1, 8, 4, 0)):  # a file that does not exist
        with pytest.raises(RangeRefusedError):
            conn.read_into([bad], dest)
    conn.read_into([ByteRange(0, second.offset + 16, 32, 0)], dest)  # inside one tensor: fine
    data = (model / manifest.files[0].name).read_bytes()
    assert bytes(dest[:32]) == data[second.offset + 16:second.offset + 48]
    conn.close()
    assert "refused a read" in server.log_text()


def test_rdma_info_without_an_exporter_is_an_error(model, start_server):
    server = start_server(model)
    conn = PeerConnection("127.0.0.1", server.port, SECRET)
    with pytest.raises(RdmaUnavailableError):
        conn.rdma_info()
    conn.manifest()  # still usable
    conn.close()


class RecordingExporter:
    name = "rdma"

    def __init__(self):
        self.regions = None
        self.closed = False

    def attach(self, manifest, regions):
        self.regions = [bytes(r) for r in regions]

    def descriptor(self):
        return {"gid": "fe80::1", "rkey": 42}

    def connect(self, params):
        if params.get("fail"):
            raise RuntimeError("no QP today")
        return {"qp_num": 7, "echo": params}

    def close(self):
        self.closed = True


@pytest.mark.parametrize("in_ram", [False, True])
def test_an_rdma_exporter_sees_the_files_and_answers_only_authenticated_peers(model, in_ram):
    exporter = RecordingExporter()
    server = WeightServer(model, SECRET, in_ram=in_ram, rdma_exporter=exporter).start()
    try:
        assert exporter.regions == [(model / f.name).read_bytes() for f in server.manifest.files]
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            send_message(raw, {"op": "rdma-info"})
            assert recv_message(raw)["code"] == "auth"
        conn = PeerConnection("127.0.0.1", server.port, SECRET)
        assert conn.rdma_info() == {"gid": "fe80::1", "rkey": 42}
        assert conn.rdma_connect({"qp_num": 3}) == {"qp_num": 7, "echo": {"qp_num": 3}}
        with pytest.raises(RdmaUnavailableError, match="no QP today"):
            conn.rdma_connect({"fail": True})
        assert conn.manifest().fingerprint == server.manifest.fingerprint
        conn.close()
        assert server.stats.auth_failures == 1 and server.stats.authenticated == 1
    finally:
        server.close()
    assert exporter.closed
