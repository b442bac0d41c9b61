"""``python3 -m rdma_loader MODEL_DIR``: the weight server (see ``rdma_loader.server.main``)."""

import sys

from rdma_loader.server import main

sys.exit(main())
