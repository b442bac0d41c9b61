"""Pull one model into one buffer from the fastest source, verifying every tensor as it lands.

``Puller(sources).pull(manifest)`` ranks the sources by estimated time, then fetches the
tensors in groups of about ``group_bytes`` from the first. While group *k + 1* is on the wire,
group *k* is hashed on ``verify_threads`` threads (hashlib and xxhash release the GIL), so checking costs
little wall time. A tensor whose bytes do not match its checksum is fetched again from the next
source (never the same one). A source that fails mid-transfer (``TransportError``) is left;
the next one is asked only for the tensors not yet verified. What came from where is in the
``PullResult``. Standard library only (xxhash, when installed, for xxh3-128 manifests).
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from rdma_loader.errors import NoSourceError, TransportError
from rdma_loader.manifest import Manifest, TensorEntry, checksum
from rdma_loader.sources import Source, SourceKind, ranked
from rdma_loader.transport import ByteRange

log = logging.getLogger(__name__)

DEFAULT_GROUP_BYTES = 256 * 1024 * 1024  # 64 MiB groups measured ~0.77 of the link, 256 MiB ~0.9


@dataclass(frozen=True)
class SourceReport:
    label: str
    kind: SourceKind
    estimate_s: float
    requested_bytes: int  # asked of this source (verified or not)
    verified_bytes: int
    verified_tensors: int
    corrupt_tensors: int  # failed their checksum; fetched again elsewhere
    seconds: float
    error: str = ""  # why it was left, if it was


@dataclass(frozen=True)
class PullResult:
    manifest: Manifest
    buffer: mmap.mmap
    offsets: tuple[int, ...]  # of each manifest tensor in ``buffer``
    reports: tuple[SourceReport, ...]  # in the order the sources were used
    refetched: tuple[str, ...]  # tensors that failed a checksum once and were fetched again
    seconds: float

    def view(self, index: int) -> memoryview:
        tensor = self.manifest.tensors[index]
        return memoryview(self.buffer)[self.offsets[index]:self.offsets[index] + tensor.length]

    def tensors(self) -> Iterator[tuple[TensorEntry, memoryview]]:
        for index, tensor in enumerate(self.manifest.tensors):
            yield tensor, self.view(index)

    def report(self, label: str) -> SourceReport:
        return next(r for r in self.reports if r.label == label)

    @property
    def bytes_per_s(self) -> float:
        return self.manifest.total_bytes / max(self.seconds, 1e-9)


class Puller:
    def __init__(self, sources: Sequence[Source], group_bytes: int = DEFAULT_GROUP_BYTES,
                 verify_threads: int = 2) -> None:
        if not sources:
            raise ValueError("sources: at least one is required")
        if group_bytes < 1 or verify_threads < 1:
            raise ValueError("group_bytes and verify_threads must be at least 1")
        self.sources = list(sources)
        self.group_bytes = group_bytes
        self.verify_threads = verify_threads

    def plan(self, manifest: Manifest) -> list[tuple[float, Source]]:
        return ranked(self.sources, manifest.total_bytes)

    def pull(self, manifest: Manifest) -> PullResult:
        start = time.perf_counter()
        offsets, size = manifest.packed_layout()
        buffer = mmap.mmap(-1, max(size, 1))
        job = _Pull(manifest, offsets, memoryview(buffer))
        reports = []
        with ThreadPoolExecutor(self.verify_threads, thread_name_prefix="verify") as pool:
            for estimate, source in self.plan(manifest):
                todo = job.todo_for(source.label)
                if not todo:
                    continue
                reports.append(self._from_source(source, estimate, todo, job, pool))
                if not job.pending:
                    break
        if job.pending:
            job.dest.release()
            buffer.close()
            reasons = "; ".join(f"{r.label}: {r.error or 'served corrupt bytes'}" for r in reports)
            raise NoSourceError(f"{len(job.pending)} of {len(manifest.tensors)} tensors could not be "
                                f"pulled from any source ({reasons or 'no source could serve them'})")
        refetched = tuple(manifest.tensors[i].name for i in sorted(job.corrupt_from))
        return PullResult(manifest, buffer, offsets, tuple(reports), refetched, time.perf_counter() - start)

    def _from_source(self, source: Source, estimate: float, todo: list[int], job: _Pull,
                     pool: ThreadPoolExecutor) -> SourceReport:
        start = time.perf_counter()
        tally = _Tally()
        error = ""
        in_flight: list[tuple[int, Future]] = []
        try:
            source.prepare(job.manifest)
            for group in _groups(job.manifest, todo, self.group_bytes):
                ranges = [job.byte_range(i) for i in group]
                tally.requested += sum(r.length for r in ranges)
                source.fetch(ranges, job.dest)
                job.settle(source.label, in_flight, tally, keep=0)  # the group before, hashed meanwhile
                in_flight += [(i, pool.submit(job.verify, i)) for i in group]
        except TransportError as exc:
            error = str(exc)
            log.warning("source %s failed, %d tensors left for the next: %s", source.label,
                        len(job.pending), exc)
        finally:
            job.settle(source.label, in_flight, tally, keep=0)
            source.close()
        return SourceReport(source.label, source.kind, estimate, tally.requested, tally.bytes,
                            tally.tensors, tally.corrupt, time.perf_counter() - start, error)


@dataclass
class _Tally:
    requested: int = 0
    bytes: int = 0
    tensors: int = 0
    corrupt: int = 0


class _Pull:
    """The state of one pull: which tensors are still pending, which sources served bad bytes."""

    def __init__(self, manifest: Manifest, offsets: tuple[int, ...], dest: memoryview) -> None:
        self.manifest, self.offsets, self.dest = manifest, offsets, dest
        self.pending: set[int] = set(range(len(manifest.tensors)))
        self.corrupt_from: dict[int, set[str]] = {}

    def todo_for(self, label: str) -> list[int]:
        return sorted(i for i in self.pending if label not in self.corrupt_from.get(i, ()))

    def byte_range(self, index: int) -> ByteRange:
        t = self.manifest.tensors[index]
        return ByteRange(t.file_index, t.offset, t.length, self.offsets[index])

    def verify(self, index: int) -> bool:
        t = self.manifest.tensors[index]
        view = self.dest[self.offsets[index]:self.offsets[index] + t.length]
        return checksum(view, self.manifest.algorithm) == t.checksum

    def settle(self, label: str, in_flight: list[tuple[int, Future]], tally: _Tally, keep: int) -> None:
        """Wait for all but the last ``keep`` verifications and record them."""
        while len(in_flight) > keep:
            index, future = in_flight.pop(0)
            if future.result():
                self.pending.discard(index)
                tally.bytes += self.manifest.tensors[index].length
                tally.tensors += 1
            else:
                self.corrupt_from.setdefault(index, set()).add(label)
                tally.corrupt += 1
                log.warning("tensor %s from %s failed its checksum; it will be fetched elsewhere",
                            self.manifest.tensors[index].name, label)


def _groups(manifest: Manifest, indices: list[int], group_bytes: int) -> Iterator[list[int]]:
    group: list[int] = []
    size = 0
    for i in indices:
        group.append(i)
        size += manifest.tensors[i].length
        if size >= group_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group
