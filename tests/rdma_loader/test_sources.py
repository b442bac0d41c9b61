"""Source estimates: honest about disks beating home networks."""

from __future__ import annotations

import pytest

from rdma_loader.errors import TransportError
from rdma_loader.manifest import build_manifest
from rdma_loader.sources import (
    DiskSource,
    MemorySource,
    PeerSource,
    RemoteSource,
    ResidentSource,
    SourceKind,
    probe_disk,
    ranked,
)
from rdma_loader.transport import ByteRange
from tests.rdma_loader.conftest import SECRET, make_random_model

GB = 10**9


def _kinds(sources, size):
    return [s.kind for _, s in ranked(sources, size)]


def test_a_local_nvme_beats_peers_on_home_networks():
    disk = DiskSource("/nonexistent", bandwidth_bytes_s=2.5 * GB)  # NVMe
    ten_gbe = PeerSource("10.0.0.2", 7070, SECRET)  # default: 10 GbE
    one_gbe = PeerSource("10.0.0.3", 7070, SECRET, bandwidth_bytes_s=0.117 * GB)
    hub = RemoteSource("hub:org/model")
    assert _kinds([hub, one_gbe, ten_gbe, disk], 16 * GB) == [
        SourceKind.LOCAL_DISK, SourceKind.PEER_TCP, SourceKind.PEER_TCP, SourceKind.REMOTE]
    assert ranked([one_gbe, ten_gbe], 16 * GB)[0][1] is ten_gbe


def test_rdma_and_host_ram_beat_the_disk_and_a_spinning_disk_loses_to_10gbe():
    disk = DiskSource("/nonexistent", bandwidth_bytes_s=2.5 * GB)
    rdma = PeerSource("10.0.0.2", 7070, SECRET, transport="rdma", bandwidth_bytes_s=5 * GB)  # 40 Gb
    ram = MemorySource("shm", [], bandwidth_bytes_s=8 * GB)
    resident = ResidentSource("engine")
    assert _kinds([disk, rdma, ram, resident], 16 * GB) == [
        SourceKind.RESIDENT, SourceKind.HOST_CACHE, SourceKind.PEER_RDMA, SourceKind.LOCAL_DISK]
    hdd = DiskSource("/nonexistent", bandwidth_bytes_s=0.15 * GB)
    assert _kinds([hdd, PeerSource("10.0.0.2", 7070, SECRET)], 16 * GB)[0] == SourceKind.PEER_TCP


def test_setup_latency_decides_for_small_models():
    disk = DiskSource("/nonexistent", bandwidth_bytes_s=1 * GB)
    rdma = PeerSource("10.0.0.2", 7070, SECRET, transport="rdma", bandwidth_bytes_s=10 * GB, setup_s=0.05)
    assert ranked([rdma, disk], 1_000_000)[0][1] is disk  # 1 MB: 1 ms from disk, 50 ms to set up RDMA
    assert ranked([rdma, disk], 10 * GB)[0][1] is rdma


def test_the_disk_probe_measures_a_real_read(tmp_path):
    model = make_random_model(tmp_path / "m", [[1 << 20, 4 << 20]])
    assert probe_disk(model) > 10e6  # a page-cache read is far faster; the point is it is measured
    assert DiskSource(model, probe=True).bandwidth_bytes_s > 10e6


def test_disk_source_refuses_other_files_and_reads_into_the_buffer(tmp_path):
    model = make_random_model(tmp_path / "m", [[4096, 64]])
    manifest = build_manifest(model)
    other = DiskSource(make_random_model(tmp_path / "o", [[8192]]))
    with pytest.raises(TransportError, match="another version"):
        other.prepare(manifest)
    disk = DiskSource(model)
    disk.prepare(manifest)
    dest = memoryview(bytearray(64))
    t = manifest.tensors[1]
    disk.fetch([ByteRange(0, t.offset, 64, 0)], dest)
    disk.close()
    assert bytes(dest) == (model / manifest.files[0].name).read_bytes()[t.offset:t.offset + 64]


def test_memory_source_copies_from_host_ram(tmp_path):
    model = make_random_model(tmp_path / "m", [[256]])
    manifest = build_manifest(model)
    data = (model / manifest.files[0].name).read_bytes()
    source = MemorySource("ram", [memoryview(data)])
    source.prepare(manifest)
    dest = memoryview(bytearray(256))
    source.fetch([ByteRange(0, manifest.tensors[0].offset, 256, 0)], dest)
    assert bytes(dest) == data[manifest.tensors[0].offset:]


def test_a_remote_download_is_estimated_but_refuses_clearly():
    hub = RemoteSource("hub:org/model")
    assert hub.estimate_s(GB) == pytest.approx(2.0 + 20.0)
    with pytest.raises(TransportError, match="not implemented"):
        hub.prepare(None)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="transport"):
        PeerSource("h", 1, SECRET, transport="udp")
    with pytest.raises(ValueError, match="bandwidth"):
        DiskSource("/x", bandwidth_bytes_s=-1)
