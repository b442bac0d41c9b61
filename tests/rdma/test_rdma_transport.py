"""RDMA READs for real: an exporter process and this process as the puller, over Soft-RoCE.

Runs in the VM (``make test-rdma``, plain unittest); in the host suite it is marked ``rdma``
and skipped with the reason when there is no RDMA device or no pyverbs. Standard library and
pyverbs only.
"""

import random
import signal
import tempfile
import threading
import time
import unittest
from pathlib import Path

from rdma_loader.errors import PeerGoneError, RangeRefusedError, RdmaUnavailableError
from rdma_loader.rdma import RdmaTransport
from rdma_loader.transport import ByteRange
from tests.rdma.support import IP, ExporterProcess, next_port, rdma_missing, sha256, write_random_files

try:
    import pytest

    pytestmark = pytest.mark.rdma
except ImportError:  # the VM's python3 has no pytest
    pass

MIB = 1 << 20
SKIP = rdma_missing()


@unittest.skipIf(SKIP, SKIP)
class RdmaPullTest(unittest.TestCase):
    """Three files (about 28 MiB) exported once by a separate process."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.paths = write_random_files(Path(cls.tmp.name), [9 * MIB + 123, 16 * MIB, 3 * MIB + 7, 0], seed=5)
        cls.data = [p.read_bytes() for p in cls.paths]
        cls.exporter = ExporterProcess(cls.paths, next_port())

    @classmethod
    def tearDownClass(cls):
        cls.exporter.stop()
        cls.tmp.cleanup()

    def transport(self, **options):
        transport = RdmaTransport(self.exporter.descriptor, **options)
        self.addCleanup(transport.close)
        return transport

    def test_whole_files_arrive_byte_for_byte(self):
        transport = self.transport(chunk_bytes=2 * MIB, depth=8)
        ranges, cursor = [], 0
        for i, data in enumerate(self.data):
            ranges.append(ByteRange(i, 0, len(data), cursor))
            cursor += len(data)
        dest = bytearray(cursor)
        transport.fetch(ranges, memoryview(dest))
        for r, data in zip(ranges, self.data):
            got = memoryview(dest)[r.dest_offset:r.dest_offset + r.length]
            self.assertEqual(sha256(got), sha256(data))
            self.assertTrue(got == data)

    def test_scattered_ranges_land_at_their_destination_offsets(self):
        rng = random.Random(11)
        ranges, cursor = [], 0
        for _ in range(40):
            i = rng.randrange(3)
            length = rng.randrange(1, 600_000)
            offset = rng.randrange(len(self.data[i]) - length)
            cursor = -(-cursor // 256) * 256
            ranges.append(ByteRange(i, offset, length, cursor))
            cursor += length
        rng.shuffle(ranges)
        dest = bytearray(cursor)
        self.transport(chunk_bytes=256 * 1024, depth=16).fetch(ranges, memoryview(dest))
        for r in ranges:
            want = self.data[r.file_index][r.offset:r.offset + r.length]
            self.assertEqual(sha256(memoryview(dest)[r.dest_offset:r.dest_offset + r.length]), sha256(want), r)

    def test_a_range_past_the_registered_length_is_refused_before_any_read(self):
        transport = self.transport()
        size = len(self.data[2])
        dest = bytearray(2 * MIB)
        with self.assertRaises(RangeRefusedError):
            transport.fetch([ByteRange(2, 0, MIB, 0), ByteRange(2, size - 10, 11, MIB)], memoryview(dest))
        self.assertEqual(dest.count(0), len(dest), "nothing may be READ when one range is refused")
        transport.fetch([ByteRange(2, size - MIB, MIB, 0)], memoryview(dest))  # still usable
        self.assertTrue(memoryview(dest)[:MIB] == self.data[2][-MIB:])

    def test_an_empty_file_and_empty_ranges_are_fine(self):
        self.transport().fetch([ByteRange(3, 0, 0, 0)], memoryview(bytearray(1)))

    def test_connecting_to_nobody_fails_within_the_connect_timeout(self):
        descriptor = {**self.exporter.descriptor, "port": next_port()}
        started = time.monotonic()
        with self.assertRaises(RdmaUnavailableError):
            RdmaTransport(descriptor, connect_timeout_s=2)
        self.assertLess(time.monotonic() - started, 15)


@unittest.skipIf(SKIP, SKIP)
class RdmaPeerGoneTest(unittest.TestCase):
    def test_an_exporter_killed_mid_pull_raises_peer_gone_promptly(self):
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_random_files(Path(tmp), [24 * MIB], seed=7)
            exporter = ExporterProcess(paths, next_port())
            try:
                transport = RdmaTransport(exporter.descriptor, chunk_bytes=MIB, depth=4, stall_timeout_s=60)
                killed_at = []

                def kill():
                    exporter.proc.send_signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())

                timer = threading.Timer(0.3, kill)
                timer.start()
                with self.assertRaises(PeerGoneError) as caught:
                    transport.fetch([ByteRange(0, 0, 24 * MIB, 0)], memoryview(bytearray(24 * MIB)))
                failed_at = time.monotonic()
                timer.join()
                self.assertTrue(killed_at, f"the pull finished before the kill: {caught.exception}")
                self.assertLess(failed_at - killed_at[0], 20, str(caught.exception))
                print(f"\n  peer gone detected {failed_at - killed_at[0]:.1f} s after the kill: "
                      f"{caught.exception}", flush=True)
                with self.assertRaises(PeerGoneError):  # and it stays failed
                    transport.fetch([ByteRange(0, 0, 1, 0)], memoryview(bytearray(1)))
                transport.close()
            finally:
                exporter.stop()


if __name__ == "__main__":
    unittest.main()
