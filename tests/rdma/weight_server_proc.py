"""``python3 tests/rdma/weight_server_proc.py MODEL_DIR SECRET_FILE RDMA_IP RDMA_PORT [--copy]``.

A ``WeightServer`` on loopback TCP with an ``RdmaExporter`` plugged in: the exporter registers
the model files in place, or with ``--copy`` copies the server's regions (no ``model_dir``).
Prints the server's ready line. Standard library + pyverbs only (runs in the Soft-RoCE VM).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rdma_loader.rdma_export import RdmaExporter  # noqa: E402
from rdma_loader.server import WeightServer, announce  # noqa: E402


def main() -> None:
    model_dir, secret_file, ip, port = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    copy = "--copy" in sys.argv[5:]
    exporter = RdmaExporter(ip, port, model_dir=None if copy else model_dir)
    server = WeightServer(model_dir, secret_file.read_bytes(), "127.0.0.1", 0, in_ram=copy,
                          rdma_exporter=exporter).start()
    announce(server)
    server.wait()


if __name__ == "__main__":
    main()
