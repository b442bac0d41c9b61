"""Faults on real processes: a server killed mid-pull, a corrupted byte, no source left."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from rdma_loader.errors import NoSourceError
from rdma_loader.manifest import build_manifest
from rdma_loader.puller import Puller
from rdma_loader.sources import DiskSource, PeerSource, RemoteSource
from tests.rdma_loader.conftest import SECRET, expected_bytes, make_random_model

MIB = 1 << 20


def _peer(server, bandwidth: float, streams: int = 2) -> PeerSource:
    return PeerSource("127.0.0.1", server.port, SECRET, streams=streams, bandwidth_bytes_s=bandwidth, setup_s=0)


def _assert_all_bytes(result, model):
    expected = expected_bytes(model, result.manifest)
    assert all(bytes(view) == expected[t.name] for t, view in result.tensors())


@pytest.mark.parametrize("fallback", ["peer", "disk"])
def test_server_killed_mid_pull_the_rest_comes_from_the_next_source(tmp_path, start_server, fallback):
    model = make_random_model(tmp_path / "model", [[MIB] * 24])
    manifest = build_manifest(model)
    slow = start_server(model, "--max-bytes-per-s", str(12 * MIB))  # 2 s for the whole model
    if fallback == "peer":
        second = _peer(start_server(model), 1e9)
    else:
        second = DiskSource(model, bandwidth_bytes_s=1e9)
    killer = threading.Timer(0.8, slow.kill)
    puller = Puller([second, _peer(slow, 1e12)], group_bytes=2 * MIB)

    killer.start()
    result = puller.pull(manifest)

    first, rest = result.reports
    assert first.label.endswith(f":{slow.port}")
    assert "closed" in first.error or "reset" in first.error, first.error
    assert 0 < first.verified_tensors < len(manifest.tensors)
    assert first.requested_bytes > first.verified_bytes  # it died with a group on the wire
    # the next source was asked only for what was not verified yet
    assert rest.requested_bytes == rest.verified_bytes == manifest.total_bytes - first.verified_bytes
    assert rest.error == "" and result.refetched == ()
    _assert_all_bytes(result, model)


def test_a_corrupted_byte_is_detected_and_that_tensor_alone_is_refetched(tmp_path, start_server):
    model = make_random_model(tmp_path / "model", [[MIB, MIB, MIB, 4096]])
    manifest = build_manifest(model)
    tampered = tmp_path / "tampered"
    shutil.copytree(model, tampered)
    server = start_server(tampered)
    victim = manifest.tensors[1]
    with (tampered / manifest.files[0].name).open("r+b") as fh:  # bit rot after the server started
        fh.seek(victim.offset + 1234)
        byte = fh.read(1)
        fh.seek(victim.offset + 1234)
        fh.write(bytes([byte[0] ^ 0x01]))
    disk = DiskSource(model, bandwidth_bytes_s=1e9)

    result = Puller([_peer(server, 1e12), disk], group_bytes=MIB).pull(manifest)

    peer_report, disk_report = result.reports
    assert peer_report.corrupt_tensors == 1 and peer_report.verified_tensors == 3
    assert result.refetched == (victim.name,)
    assert disk_report.requested_bytes == disk_report.verified_bytes == victim.length
    _assert_all_bytes(result, model)


def test_when_every_source_fails_the_error_names_each(tmp_path, start_server):
    model = make_random_model(tmp_path / "model", [[4096]])
    manifest = build_manifest(model)
    gone = start_server(model)
    gone.kill()
    other = make_random_model(tmp_path / "other", [[8192]])
    with pytest.raises(NoSourceError) as info:
        Puller([_peer(gone, 1e9), DiskSource(other), RemoteSource("hub:org/model")]).pull(manifest)
    message = str(info.value)
    assert f"127.0.0.1:{gone.port}" in message and "another version" in message
    assert "not implemented" in message


def test_a_peer_serving_another_model_is_not_used(tmp_path, start_server):
    model = make_random_model(tmp_path / "model", [[4096]])
    other = start_server(make_random_model(tmp_path / "other", [[4096]], seed=1))
    disk = DiskSource(model, bandwidth_bytes_s=1e6)
    result = Puller([_peer(other, 1e12), disk]).pull(build_manifest(model))
    assert "fingerprint" in result.reports[0].error and result.reports[1].verified_tensors == 1


def test_verification_runs_while_the_next_group_is_fetched(tmp_path):
    model = make_random_model(tmp_path / "model", [[4 * MIB] * 8])
    manifest = build_manifest(model)
    start = time.perf_counter()
    result = Puller([DiskSource(model)], group_bytes=4 * MIB).pull(manifest)
    assert result.reports[0].verified_bytes == 32 * MIB and time.perf_counter() - start < 10
    _assert_all_bytes(result, model)
