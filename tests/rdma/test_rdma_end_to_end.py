"""The whole RDMA path: a WeightServer process with an RdmaExporter, and this process pulling
through ``Puller`` with a ``PeerSource(transport="rdma")``: authenticated descriptor, READs,
checksums; a wrong secret gets no descriptor; a server killed mid-pull leaves the pull to the disk.

Runs in the Soft-RoCE VM (``make test-rdma``); marked ``rdma`` and skipped elsewhere.
"""

import json
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
from pathlib import Path

from rdma_loader.errors import AuthenticationError
from rdma_loader.manifest import build_manifest
from rdma_loader.protocol import recv_message, send_message
from rdma_loader.puller import Puller
from rdma_loader.random_model import write_random_model
from rdma_loader.sources import DiskSource, PeerSource, SourceKind
from rdma_loader.tcp import PeerConnection
from tests.rdma.support import IP, ROOT, next_port, rdma_missing, sha256

try:
    import pytest

    pytestmark = pytest.mark.rdma
except ImportError:  # the VM's python3 has no pytest
    pass

MIB = 1 << 20
SKIP = rdma_missing()


class ServerProcess:
    def __init__(self, model_dir: Path, secret_file: Path, copy: bool = False) -> None:
        args = [sys.executable, str(ROOT / "tests/rdma/weight_server_proc.py"), str(model_dir), str(secret_file),
                IP, str(next_port())] + (["--copy"] if copy else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError("the weight server process printed no ready line")
        self.port = json.loads(line)["port"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@unittest.skipIf(SKIP, SKIP)
class RdmaEndToEndTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model_dir = write_random_model(Path(cls.tmp.name) / "model", 24 * MIB, files=2, seed=2)
        cls.secret = secrets.token_hex(16).encode()
        cls.secret_file = Path(cls.tmp.name) / "secret"
        cls.secret_file.write_bytes(cls.secret)
        cls.manifest = build_manifest(cls.model_dir)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def server(self, copy=False):
        server = ServerProcess(self.model_dir, self.secret_file, copy)
        self.addCleanup(server.stop)
        return server

    def assert_pulled_exactly(self, result):
        files = [(self.model_dir / f.name).read_bytes() for f in self.manifest.files]
        for tensor, view in result.tensors():
            self.assertEqual(sha256(view), sha256(files[tensor.file_index][tensor.offset:tensor.offset + tensor.length]))

    def test_the_puller_pulls_every_tensor_over_rdma(self):
        server = self.server()
        result = Puller([PeerSource("127.0.0.1", server.port, self.secret, transport="rdma")]).pull(self.manifest)
        (report,) = result.reports
        self.assertEqual((report.kind, report.error), (SourceKind.PEER_RDMA, ""))
        self.assertEqual(report.verified_bytes, self.manifest.total_bytes)
        self.assert_pulled_exactly(result)

    def test_a_wrong_secret_gets_no_descriptor(self):
        server = self.server()
        with self.assertRaises(AuthenticationError):
            PeerConnection("127.0.0.1", server.port, b"not-the-cluster-secret")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            send_message(sock, {"op": "rdma-info"})  # skipping the handshake
            try:
                reply = recv_message(sock)
            except Exception as exc:  # closed on us: also nothing served
                reply = {"closed": str(exc)}
        self.assertNotIn("descriptor", reply)

    def test_a_server_killed_mid_pull_leaves_the_rest_to_the_disk(self):
        server = self.server(copy=True)  # also covers the exporter copying the server's regions
        fetches = []

        class KilledPeer(PeerSource):
            def fetch(self, ranges, dest):
                fetches.append(len(ranges))
                if len(fetches) == 1:  # READs of about 1 s: kill in the middle of the first
                    threading.Timer(0.3, server.proc.send_signal, (signal.SIGKILL,)).start()
                super().fetch(ranges, dest)

        peer = KilledPeer("127.0.0.1", server.port, self.secret, transport="rdma", bandwidth_bytes_s=1e10)
        disk = DiskSource(self.model_dir, bandwidth_bytes_s=1e6)
        result = Puller([peer, disk], group_bytes=MIB).pull(self.manifest)
        rdma, local = result.reports
        self.assertIn("READ", rdma.error)
        self.assertEqual(rdma.verified_bytes + local.verified_bytes, self.manifest.total_bytes)
        self.assert_pulled_exactly(result)


if __name__ == "__main__":
    unittest.main()
