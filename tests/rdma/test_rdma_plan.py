"""The RDMA transport's pure parts: READ planning, range refusal, descriptor checks, no pyverbs.

These need no RDMA device and run everywhere (host suite, CI, the VM). Standard library only.
"""

import unittest

from rdma_loader.errors import RangeRefusedError, RdmaUnavailableError
from rdma_loader.rdma import Read, RdmaDescriptor, RdmaTransport, plan_reads
from rdma_loader.transport import ByteRange
from tests.rdma.support import rdma_missing

DESCRIPTOR = {"transport": "rdma", "ip": "10.99.0.1", "port": 7471, "depth": 8,
              "files": [{"addr": 4096, "rkey": 17, "length": 100}]}


class PlanReadsTest(unittest.TestCase):
    def test_ranges_are_split_into_chunks(self):
        reads = plan_reads([ByteRange(0, 10, 10, 0)], [100], 100, 4)
        self.assertEqual([(r.offset, r.length, r.dest_offset) for r in reads], [(10, 4, 0), (14, 4, 4), (18, 2, 8)])

    def test_ranges_continuing_each_other_are_merged(self):
        reads = plan_reads([ByteRange(0, 0, 5, 0), ByteRange(0, 5, 5, 5), ByteRange(0, 10, 5, 20)], [100], 100, 64)
        self.assertEqual(reads, [Read(0, 0, 10, 0), Read(0, 10, 5, 20)])

    def test_a_range_past_the_registered_length_is_refused(self):
        with self.assertRaisesRegex(RangeRefusedError, "file 0 has 100 bytes"):
            plan_reads([ByteRange(0, 0, 10, 0), ByteRange(0, 95, 6, 10)], [100], 100, 64)

    def test_a_range_of_an_unknown_file_is_refused(self):
        with self.assertRaisesRegex(RangeRefusedError, "1 files"):
            plan_reads([ByteRange(1, 0, 1, 0)], [100], 100, 64)

    def test_a_range_past_the_destination_is_a_caller_error(self):
        with self.assertRaisesRegex(ValueError, "destination buffer"):
            plan_reads([ByteRange(0, 0, 10, 95)], [100], 100, 64)

    def test_empty_ranges_post_nothing(self):
        self.assertEqual(plan_reads([ByteRange(0, 100, 0, 0)], [100], 100, 64), [])


class DescriptorTest(unittest.TestCase):
    def test_round_trip(self):
        self.assertEqual(RdmaDescriptor.from_json(DESCRIPTOR).to_json(), DESCRIPTOR)

    def test_a_bad_field_is_named(self):
        bad = {**DESCRIPTOR, "files": [{"addr": 1, "rkey": -1, "length": 3}]}
        with self.assertRaisesRegex(RdmaUnavailableError, r"files\[0\]\.rkey"):
            RdmaDescriptor.from_json(bad)

    def test_another_transport_is_refused(self):
        with self.assertRaisesRegex(RdmaUnavailableError, "transport 'rdma'"):
            RdmaDescriptor.from_json({**DESCRIPTOR, "transport": "tcp"})


@unittest.skipIf(rdma_missing() is None, "pyverbs and an RDMA device are present")
class WithoutRdmaTest(unittest.TestCase):
    def test_the_transport_says_what_is_missing(self):
        with self.assertRaisesRegex(RdmaUnavailableError, "pyverbs|RDMA"):
            RdmaTransport(DESCRIPTOR, connect_timeout_s=0).close()


if __name__ == "__main__":
    unittest.main()
