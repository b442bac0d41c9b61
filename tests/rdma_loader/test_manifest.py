"""Manifests from real safetensors files, and every way a file or a manifest can lie."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from rdma_loader.errors import ManifestError
from rdma_loader.manifest import MAX_HEADER_BYTES, Manifest, build_manifest, checksum, read_header
from tests.rdma_loader.conftest import make_random_model, write_safetensors


def test_manifest_of_a_real_model_matches_what_safetensors_reads(tiny_model):
    from safetensors import safe_open

    manifest = build_manifest(tiny_model)
    data = (tiny_model / manifest.files[0].name).read_bytes()
    with safe_open(tiny_model / manifest.files[0].name, framework="pt") as st:
        assert sorted(t.name for t in manifest.tensors) == sorted(st.keys())
        for t in manifest.tensors:
            tensor = st.get_tensor(t.name)
            assert t.shape == tuple(tensor.shape) and t.dtype == "F32"
            chunk = data[t.offset:t.offset + t.length]
            assert chunk == tensor.numpy().tobytes()
            assert t.checksum == checksum(chunk, manifest.algorithm)
    assert manifest.files[0].size_bytes == len(data)


def test_manifest_survives_a_json_round_trip(tmp_path):
    manifest = build_manifest(make_random_model(tmp_path / "m", [[400, 8], [1200]]))
    again = Manifest.from_json(json.loads(json.dumps(manifest.to_json())))
    assert again == manifest and again.fingerprint == manifest.fingerprint
    assert [f.name for f in again.files] == ["model-00000-of-00002.safetensors",
                                             "model-00001-of-00002.safetensors"]


def test_fingerprint_is_equal_for_equal_bytes_and_changes_with_one_config_byte(tmp_path):
    first = make_random_model(tmp_path / "a", [[64, 128]])
    second = tmp_path / "b"
    shutil.copytree(first, second)
    assert build_manifest(first).fingerprint == build_manifest(second).fingerprint
    config = (second / "config.json").read_bytes()
    (second / "config.json").write_bytes(config.replace(b"0", b"1", 1))
    assert build_manifest(first).fingerprint != build_manifest(second).fingerprint


def test_packed_layout_aligns_every_tensor(tmp_path):
    manifest = build_manifest(make_random_model(tmp_path / "m", [[4, 12, 100]]))
    offsets, size = manifest.packed_layout()
    assert offsets == (0, 64, 128) and size == 228


def test_truncated_header_is_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b'{"a": ')
    with pytest.raises(ManifestError, match="header length.*truncated"):
        read_header(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ManifestError, match="at least 8"):
        read_header(path)


def test_header_over_the_limit_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")
    with pytest.raises(ManifestError, match="limit"):
        read_header(path)


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "beyond|but the file"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap"),
    ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, b"\0", "dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9, "trailing"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
])
def test_lying_headers_are_refused_naming_the_field(tmp_path, header, data, message):
    path = write_safetensors(tmp_path / "lie.safetensors", header, data)
    with pytest.raises(ManifestError, match=message):
        read_header(path)


def test_metadata_is_not_a_tensor(tmp_path):
    path = write_safetensors(tmp_path / "ok.safetensors", {
        "__metadata__": {"format": "pt"}, "w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}},
        b"\1" * 12)
    (tensor,) = read_header(path)
    assert tensor.name == "w" and tensor.shape == (2, 3) and tensor.length == 12


def test_pickle_checkpoints_are_never_read(tmp_path):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ManifestError, match="never loaded"):
        build_manifest(model)
    with pytest.raises(ManifestError, match="only .safetensors"):
        read_header(model / "pytorch_model.bin")


def _manifest_json(tmp_path) -> dict:
    return build_manifest(make_random_model(tmp_path / "m", [[16, 32]])).to_json()


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m["tensors"][0].pop("checksum"), r"tensors\[0\]\.checksum: missing"),
    (lambda m: m["tensors"][1].update(checksum="ab" * 8), r"tensors\[1\]\.checksum: 32"),
    (lambda m: m["tensors"][1].update(offset=m["files"][0]["size_bytes"] - 4), r"tensors\[1\]\.offset"),
    (lambda m: m["tensors"][0].update(file_index=3), r"tensors\[0\]\.file_index"),
    (lambda m: m["tensors"][0].update(shape=[5]), r"tensors\[0\]\.length"),
    (lambda m: m["tensors"][1].update(offset=m["tensors"][0]["offset"], shape=[4], length=16),
     "overlaps"),
    (lambda m: m["files"][0].update(name="../etc/passwd.safetensors"), r"files\[0\]\.name"),
    (lambda m: m["files"][0].update(name="model.bin"), r"files\[0\]\.name"),
    (lambda m: m.update(fingerprint="0" * 64), "fingerprint"),
    (lambda m: m.pop("tensors"), r"manifest\.tensors: missing"),
    (lambda m: m.update(checksum_algorithm="md5"), "checksum_algorithm"),
])
def test_a_lying_or_truncated_manifest_names_the_field(tmp_path, mutate, field):
    data = _manifest_json(tmp_path)
    mutate(data)
    with pytest.raises(ManifestError, match=field):
        Manifest.from_json(data)


def test_checksums_are_xxh3_where_xxhash_is_installed_and_sha256_is_the_fallback(tmp_path):
    model = make_random_model(tmp_path / "m", [[64, 8]])
    fast, portable = build_manifest(model), build_manifest(model, algorithm="sha256")
    assert fast.algorithm == "xxh3-128" and len(fast.tensors[0].checksum) == 32
    assert portable.algorithm == "sha256" and len(portable.tensors[0].checksum) == 64
    assert fast.fingerprint != portable.fingerprint  # the algorithm is part of what is compared
    assert Manifest.from_json(portable.to_json()) == portable
    data = (model / fast.files[0].name).read_bytes()
    t = fast.tensors[0]
    assert checksum(data[t.offset:t.offset + t.length], "xxh3-128") == t.checksum
