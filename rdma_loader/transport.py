"""The one seam every weight transport implements (httpx's one-method transport, in spirit).

A puller asks a transport to copy byte ranges of a peer's model files straight into a buffer it
owns. The TCP transport (``rdma_loader.tcp``) and the RDMA transport (``rdma_loader.rdma``,
pyverbs) both implement :class:`Transport`; the puller does not know which one it holds.
Standard library only: this module also runs inside the Soft-RoCE VM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes at ``offset`` of the peer's file number ``file_index`` (the order of the
    manifest's files), to be written at ``dest_offset`` of the destination buffer."""

    file_index: int
    offset: int
    length: int
    dest_offset: int

    def __post_init__(self) -> None:
        if self.file_index < 0 or self.offset < 0 or self.length < 0 or self.dest_offset < 0:
            raise ValueError(f"negative field in {self!r}")


@runtime_checkable
class Transport(Protocol):
    """Copies byte ranges from one peer into local memory.

    ``fetch`` returns only when every range is in ``dest`` (or raises): a transport may keep
    several requests in flight and complete them out of order. It raises
    ``rdma_loader.errors.TransportError`` (a transient error: the puller falls back to another
    source) when the peer goes away mid-transfer, and never leaves a range half-reported:
    what it did not finish, the caller fetches again elsewhere.
    """

    name: str  # "tcp" or "rdma"

    def fetch(self, ranges: Sequence[ByteRange], dest: memoryview) -> None: ...

    def close(self) -> None: ...
