"""Pulling model weights from peers (RDMA via pyverbs, or TCP), with source choice and a vLLM
loader. The core (everything re-exported here) runs on the standard library alone; pyverbs is
imported only by ``rdma_loader.rdma`` and ``rdma_loader.rdma_export``, torch/vLLM only by
``rdma_loader.plugin``."""

from rdma_loader.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    ManifestError,
    NoSourceError,
    PeerGoneError,
    RangeRefusedError,
    RdmaUnavailableError,
    TransportError,
    WeightLoaderError,
)
from rdma_loader.manifest import FileEntry, Manifest, TensorEntry, build_manifest
from rdma_loader.puller import PullResult, Puller, SourceReport
from rdma_loader.registry import Advertisement, Registry, StaticRegistry
from rdma_loader.server import RdmaExporter, WeightServer
from rdma_loader.sources import (
    DiskSource,
    MemorySource,
    PeerSource,
    RemoteSource,
    ResidentSource,
    Source,
    SourceKind,
)
from rdma_loader.tcp import PeerConnection, TcpTransport
from rdma_loader.transport import ByteRange, Transport

LOAD_FORMAT = "nightshift-peer"
"""The vLLM load format of ``rdma_loader.plugin`` (a constant here so callers need no vLLM)."""

__all__ = [
    "LOAD_FORMAT",
    "Advertisement",
    "AuthenticationError",
    "ByteRange",
    "ChecksumMismatchError",
    "DiskSource",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "MemorySource",
    "NoSourceError",
    "PeerConnection",
    "PeerGoneError",
    "PeerSource",
    "PullResult",
    "Puller",
    "RangeRefusedError",
    "RdmaExporter",
    "RdmaUnavailableError",
    "Registry",
    "RemoteSource",
    "ResidentSource",
    "Source",
    "SourceKind",
    "SourceReport",
    "StaticRegistry",
    "TcpTransport",
    "TensorEntry",
    "Transport",
    "TransportError",
    "WeightLoaderError",
    "WeightServer",
    "build_manifest",
]
