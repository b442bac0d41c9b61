#!/bin/sh
# Runs inside the Soft-RoCE VM (../shared/rdma-vm/run-in-vm, cwd = the repository): every test
# under tests/rdma with Debian's python3 and pyverbs (plain unittest: the VM has no pytest).
set -e
cd "$(dirname "$0")/../.."
ulimit -l unlimited 2>/dev/null || true
exec python3 -m unittest discover -s tests/rdma -t . -v "$@"
