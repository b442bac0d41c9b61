"""A model's weights as a manifest: files, tensors, byte ranges, checksums and a fingerprint.

The safetensors header is parsed here, by hand (8-byte little-endian header length, then a
JSON object), so the core needs no third-party package and runs under Debian's python3 in the
Soft-RoCE VM. Only ``*.safetensors`` files are accepted; pickled checkpoints (``.bin``,
``.pt``) never are. Every check a lying file could fail is made: header size, JSON shape,
dtype and shape against the byte length, ranges sorted, contiguous and inside the file.

The fingerprint is ``sha256(config.json bytes' digest + canonical manifest JSON)``: two holders
of the same fingerprint serve byte-identical weights for the same config. Per-tensor checksums
are xxh3-128 (the ``xxhash`` package, a dependency of Nightshift: about 9 GB/s per core here)
where it is importable, else sha256 from the standard library (about 1.2 GB/s per core with SHA
extensions; blake2b is 0.7). The checksum a pull verifies against is the check of every byte
that lands, so its speed decides whether verification keeps up with the link: with sha256 a
2-core machine verifies at about half its loopback copy rate. The algorithm is part of the
manifest (and so of the fingerprint); Debian's python3 in the Soft-RoCE VM, which has no
xxhash, uses sha256 on both ends.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdma_loader.errors import ManifestError

MANIFEST_VERSION = 1
XXH3 = "xxh3-128"
SHA256 = "sha256"
HEX_CHARS: Mapping[str, int] = {XXH3: 32, SHA256: 64}
MAX_HEADER_BYTES = 100 * 1024 * 1024
ALIGN_BYTES = 64  # tensors in a pulled buffer start on this boundary (SIMD loads, frombuffer)
_HASH_CHUNK = 64 * 1024 * 1024

DTYPE_BYTES: Mapping[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the model directory, e.g. "model-00001-of-00002.safetensors"
    size_bytes: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file_index: int
    offset: int  # absolute byte offset in the file (header included)
    length: int
    checksum: str  # hex digest of the tensor's bytes, in the manifest's algorithm


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileEntry, ...]
    tensors: tuple[TensorEntry, ...]
    config_digest: str  # hex sha256 of config.json's bytes
    algorithm: str = SHA256  # of the tensors' checksums: xxh3-128 or sha256

    @property
    def total_bytes(self) -> int:
        return sum(t.length for t in self.tensors)

    @property
    def fingerprint(self) -> str:
        body = json.dumps(self._body(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(bytes.fromhex(self.config_digest) + body).hexdigest()

    def packed_layout(self, align: int = ALIGN_BYTES) -> tuple[tuple[int, ...], int]:
        """Offsets of each tensor in one destination buffer, and that buffer's size."""
        offsets, cursor = [], 0
        for tensor in self.tensors:
            cursor = -(-cursor // align) * align
            offsets.append(cursor)
            cursor += tensor.length
        return tuple(offsets), cursor

    def to_json(self) -> dict[str, Any]:
        return {**self._body(), "version": MANIFEST_VERSION, "fingerprint": self.fingerprint}

    def _body(self) -> dict[str, Any]:
        return {
            "checksum_algorithm": self.algorithm,
            "config_digest": self.config_digest,
            "files": [{"name": f.name, "size_bytes": f.size_bytes} for f in self.files],
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                         "file_index": t.file_index, "offset": t.offset, "length": t.length,
                         "checksum": t.checksum} for t in self.tensors],
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Validate a manifest received from a peer or read from a file; any lie raises
        ``ManifestError`` naming the field."""
        return _ManifestReader(data).read()


# --- safetensors headers ------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute in the file
    length: int


def read_header(path: Path) -> tuple[HeaderTensor, ...]:
    """Parse and check one safetensors file's header; tensors in file order."""
    if path.suffix != ".safetensors":
        raise ManifestError(f"{path.name}: only .safetensors files are accepted (never pickle "
                            f"checkpoints such as .bin or .pt)")
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ManifestError(f"{path.name}: header length: file has {size} bytes, needs at least 8")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise ManifestError(f"{path.name}: header length: {header_len} bytes is over the "
                                f"{MAX_HEADER_BYTES}-byte limit")
        if 8 + header_len > size:
            raise ManifestError(f"{path.name}: header length: {header_len} bytes, but the file "
                                f"has only {size - 8} after the length field (truncated?)")
        raw = fh.read(header_len)
    return parse_header(raw, data_start=8 + header_len, file_size=size, label=path.name)


def parse_header(raw: bytes, data_start: int, file_size: int, label: str) -> tuple[HeaderTensor, ...]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{label}: header: not UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ManifestError(f"{label}: header: a JSON object is required, got {type(header).__name__}")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ManifestError(f"{label}: __metadata__: must map strings to strings")
    tensors = sorted((_header_tensor(label, name, entry, data_start) for name, entry in header.items()),
                     key=lambda t: t.offset)
    cursor = data_start
    for tensor in tensors:
        if tensor.offset != cursor:
            what = "overlaps the previous tensor" if tensor.offset < cursor else "leaves a gap"
            raise ManifestError(f"{label}: {tensor.name}.data_offsets: {what} (starts at byte "
                                f"{tensor.offset - data_start}, expected {cursor - data_start})")
        cursor += tensor.length
    if cursor > file_size:
        raise ManifestError(f"{label}: data_offsets: tensors end at byte {cursor} but the file "
                            f"has {file_size} (truncated or lying offsets)")
    if cursor < file_size:
        raise ManifestError(f"{label}: data_offsets: {file_size - cursor} trailing bytes after the "
                            f"last tensor")
    return tuple(tensors)


def _header_tensor(label: str, name: str, entry: Any, data_start: int) -> HeaderTensor:
    where = f"{label}: {name}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: an object with dtype, shape, data_offsets is required")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise ManifestError(f"{where}.dtype: {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ManifestError(f"{where}.shape: a list of non-negative integers is required, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[1] < offsets[0]):
        raise ManifestError(f"{where}.data_offsets: [begin, end] with 0 <= begin <= end is "
                            f"required, got {offsets!r}")
    length = offsets[1] - offsets[0]
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if length != expected:
        raise ManifestError(f"{where}.data_offsets: {length} bytes, but {dtype} x {shape} needs {expected}")
    return HeaderTensor(name, dtype, tuple(shape), data_start + offsets[0], length)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- building ----------------------------------------------------------------------------------


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory, sorted; refuses a pickle-only model."""
    if not model_dir.is_dir():
        raise ManifestError(f"model directory: {model_dir} does not exist or is not a directory")
    files = sorted(p for p in model_dir.iterdir() if p.suffix == ".safetensors" and p.is_file())
    if not files:
        pickles = [p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        hint = f" (found pickle checkpoints {pickles}, which are never loaded)" if pickles else ""
        raise ManifestError(f"model directory: {model_dir} has no .safetensors files{hint}")
    return files


def config_digest(model_dir: Path) -> str:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ManifestError(f"config.json: missing in {model_dir}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_algorithm() -> str:
    """xxh3-128 where the xxhash package is importable, else sha256 (standard library)."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return SHA256
    return XXH3


def hasher(algorithm: str):
    """A new hash object (``update``/``hexdigest``) for ``algorithm``."""
    if algorithm == SHA256:
        return hashlib.sha256()
    if algorithm == XXH3:
        try:
            import xxhash
        except ImportError as exc:
            raise ManifestError("manifest.checksum_algorithm: 'xxh3-128' needs the xxhash package "
                                "(pip install xxhash); this machine can only check sha256") from exc
        return xxhash.xxh3_128()
    raise ManifestError(f"manifest.checksum_algorithm: {algorithm!r} is not one of {', '.join(HEX_CHARS)}")


def build_manifest(model_dir: Path, algorithm: str | None = None) -> Manifest:
    """Read every header and hash every tensor (reads all the weights once)."""
    model_dir, algorithm = Path(model_dir), algorithm or default_algorithm()
    hasher(algorithm)  # refuse an unknown or unavailable algorithm before reading anything
    files, tensors = [], []
    for index, path in enumerate(weight_files(model_dir)):
        files.append(FileEntry(path.name, path.stat().st_size))
        with path.open("rb") as fh:
            for t in read_header(path):
                tensors.append(TensorEntry(t.name, t.dtype, t.shape, index, t.offset, t.length,
                                           _hash_range(fh, t.offset, t.length, algorithm)))
    manifest = Manifest(tuple(files), tuple(tensors), config_digest(model_dir), algorithm)
    _check_no_overlap(manifest)  # and one name per tensor across all files
    return manifest


def _hash_range(fh, offset: int, length: int, algorithm: str) -> str:
    digest = hasher(algorithm)
    for chunk in _read_chunks(fh.fileno(), offset, length):
        digest.update(chunk)
    return digest.hexdigest()


def _read_chunks(fd: int, offset: int, length: int) -> Iterator[bytes]:
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(_HASH_CHUNK, end - offset), offset)
        if not chunk:
            raise ManifestError(f"file shrank while hashing at byte {offset}")
        offset += len(chunk)
        yield chunk


def checksum(data: memoryview | bytes, algorithm: str = SHA256) -> str:
    digest = hasher(algorithm)
    digest.update(data)
    return digest.hexdigest()


# --- reading a manifest from JSON --------------------------------------------------------------


class _ManifestReader:
    def __init__(self, data: Any) -> None:
        self.data = data

    def read(self) -> Manifest:
        data = self._object(self.data, "manifest")
        if data.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"manifest.version: {data.get('version')!r}, this reader knows {MANIFEST_VERSION}")
        algorithm = data.get("checksum_algorithm")
        if algorithm not in HEX_CHARS:
            raise ManifestError(f"manifest.checksum_algorithm: {algorithm!r}, expected one of "
                                f"{', '.join(HEX_CHARS)}")
        hasher(algorithm)  # xxh3-128 from a peer needs xxhash here too
        self.hex_chars = HEX_CHARS[algorithm]
        files = tuple(self._file(f, i) for i, f in enumerate(self._list(data, "files", "manifest")))
        tensors = tuple(self._tensor(t, i, files)
                        for i, t in enumerate(self._list(data, "tensors", "manifest")))
        manifest = Manifest(files, tensors, self._hex(data, "config_digest", "manifest", HEX_CHARS[SHA256]),
                            algorithm)
        _check_no_overlap(manifest)
        claimed = data.get("fingerprint")
        if claimed is not None and claimed != manifest.fingerprint:
            raise ManifestError(f"manifest.fingerprint: {claimed!r} does not match its content "
                                f"({manifest.fingerprint})")
        return manifest

    def _file(self, raw: Any, i: int) -> FileEntry:
        where = f"manifest.files[{i}]"
        obj = self._object(raw, where)
        name = self._field(obj, "name", str, where)
        if not name.endswith(".safetensors") or "/" in name or name.startswith("."):
            raise ManifestError(f"{where}.name: {name!r} must be a plain *.safetensors file name")
        return FileEntry(name, self._count(obj, "size_bytes", where))

    def _tensor(self, raw: Any, i: int, files: tuple[FileEntry, ...]) -> TensorEntry:
        where = f"manifest.tensors[{i}]"
        obj = self._object(raw, where)
        dtype = self._field(obj, "dtype", str, where)
        if dtype not in DTYPE_BYTES:
            raise ManifestError(f"{where}.dtype: {dtype!r} is not a safetensors dtype")
        shape = self._field(obj, "shape", list, where)
        if not all(_is_count(d) for d in shape):
            raise ManifestError(f"{where}.shape: non-negative integers required, got {shape!r}")
        file_index, offset, length = (self._count(obj, k, where) for k in ("file_index", "offset", "length"))
        if file_index >= len(files):
            raise ManifestError(f"{where}.file_index: {file_index}, but there are {len(files)} files")
        if offset + length > files[file_index].size_bytes:
            raise ManifestError(f"{where}.offset: bytes {offset}..{offset + length} lie beyond "
                                f"{files[file_index].name}'s {files[file_index].size_bytes} bytes")
        if length != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ManifestError(f"{where}.length: {length}, but {dtype} x {shape} needs "
                                f"{math.prod(shape) * DTYPE_BYTES[dtype]}")
        return TensorEntry(self._field(obj, "name", str, where), dtype, tuple(shape), file_index,
                           offset, length, self._hex(obj, "checksum", where))

    @staticmethod
    def _object(raw: Any, where: str) -> dict:
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: a JSON object is required, got {type(raw).__name__}")
        return raw

    @staticmethod
    def _field(obj: dict, key: str, kind: type, where: str) -> Any:
        if key not in obj:
            raise ManifestError(f"{where}.{key}: missing")
        if not isinstance(obj[key], kind):
            raise ManifestError(f"{where}.{key}: {kind.__name__} required, got {obj[key]!r}")
        return obj[key]

    def _list(self, obj: dict, key: str, where: str) -> list:
        return self._field(obj, key, list, where)

    def _count(self, obj: dict, key: str, where: str) -> int:
        value = self._field(obj, key, int, where)
        if not _is_count(value):
            raise ManifestError(f"{where}.{key}: a non-negative integer is required, got {value!r}")
        return value

    def _hex(self, obj: dict, key: str, where: str, chars: int | None = None) -> str:
        value, chars = self._field(obj, key, str, where), chars or self.hex_chars
        if len(value) != chars or any(c not in "0123456789abcdef" for c in value):
            raise ManifestError(f"{where}.{key}: {chars} lowercase hex characters "
                                f"required, got {len(value)} characters")
        return value


def _check_no_overlap(manifest: Manifest) -> None:
    by_file: dict[int, list[TensorEntry]] = {}
    seen: set[str] = set()
    for t in manifest.tensors:
        if t.name in seen:
            raise ManifestError(f"manifest.tensors: the name {t.name!r} appears twice")
        seen.add(t.name)
        by_file.setdefault(t.file_index, []).append(t)
    for index, tensors in by_file.items():
        tensors.sort(key=lambda t: t.offset)
        for prev, cur in zip(tensors, tensors[1:]):
            if cur.offset < prev.offset + prev.length:
                raise ManifestError(f"manifest.tensors: {cur.name} overlaps {prev.name} in "
                                    f"{manifest.files[index].name}")
