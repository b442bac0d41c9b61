"""Errors of the weight loader. Standard library only.

    WeightLoaderError                root of every error rdma_loader raises on purpose
    ├── TransportError               transient: this source failed; the puller tries the next
    │   ├── PeerGoneError            the peer closed, reset or timed out mid-transfer
    │   └── RdmaUnavailableError     no pyverbs, no RDMA device, or the QP could not connect
    ├── ChecksumMismatchError        transient: a tensor's bytes do not match the manifest;
    │                                that tensor is fetched again from another source
    ├── AuthenticationError          permanent: the cluster secret did not match; nothing served
    ├── ManifestError                permanent: a truncated, inconsistent or lying manifest or
    │                                safetensors header (names the file and the field)
    ├── RangeRefusedError            permanent: a requested range lies outside the manifest
    └── NoSourceError                permanent for this pull: every source failed or none exists
"""

from __future__ import annotations


class WeightLoaderError(Exception):
    """Root of every error rdma_loader raises on purpose."""


class TransportError(WeightLoaderError):
    """Transient: this source failed; the puller falls back to the next one."""


class PeerGoneError(TransportError):
    """The peer closed, reset or timed out in the middle of a transfer."""


class RdmaUnavailableError(TransportError):
    """pyverbs is not importable, no RDMA device exists, or the queue pair could not connect."""


class ChecksumMismatchError(WeightLoaderError):
    """A tensor's bytes do not match its manifest checksum; refetch it from another source."""


class AuthenticationError(WeightLoaderError):
    """The peer or the puller failed the cluster-secret challenge; nothing is served."""


class ManifestError(WeightLoaderError):
    """A manifest or safetensors header is truncated, inconsistent or lies about its data."""


class RangeRefusedError(WeightLoaderError):
    """A requested byte range lies outside every tensor of the manifest."""


class NoSourceError(WeightLoaderError):
    """No source could deliver the model (each one's failure is in the message)."""
