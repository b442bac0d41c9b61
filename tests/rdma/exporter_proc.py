"""``python3 tests/rdma/exporter_proc.py IP PORT FILE...``: an RdmaExporter in its own process.

Prints the descriptor as one JSON line, then serves until its stdin closes (or it is killed).
Standard library + pyverbs only: it runs inside the Soft-RoCE VM.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rdma_loader.rdma_export import RdmaExporter  # noqa: E402


def main() -> None:
    ip, port, *paths = sys.argv[1:]
    exporter = RdmaExporter(ip, int(port)).export_files(paths)
    print(json.dumps(exporter.descriptor()), flush=True)
    sys.stdin.read()
    exporter.close()


if __name__ == "__main__":
    main()
