"""RDMA pull throughput against ib_read_bw on the same rxe device, in one Soft-RoCE VM boot.

Run inside the VM (``make bench-rdma``; add ``RDMA_VM_ARGS=--mtu 9000`` for jumbo frames):

1. ``ib_read_bw -R`` (perftest, rdma_cm, its default queue depths) with the message size of each
   configuration's chunk and about the model's bytes: the physical limit of this link;
2. ``RdmaTransport.fetch`` of a model-sized set of files (56 MiB in four files, whole-file
   ranges into one buffer) from an ``RdmaExporter`` (its own process), per chunk size and depth.

Both run ``--rounds`` times, interleaved (the host's cores are shared, and TCG speed follows
their load). ``rdma_ratio`` is the best pull of any configuration over the best ib_read_bw of any
message size (the link's limit, conservatively); ``rdma_ratio_same_size`` compares each
configuration with ib_read_bw at its own message size. The pulled bytes are
checked (sha256) after each round. perftest's MB is 2**20 bytes, so both rates are MiB/s.
Results are merged into bench/results/weight_pull.json (the tcp keys are kept). The VM runs
under TCG emulation: only the ratio means anything, not the MiB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdma_loader.rdma import RdmaExporter, RdmaTransport  # noqa: E402
from rdma_loader.transport import ByteRange  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "weight_pull.json"
MIB = 1 << 20
FILE_SIZES = [20 * MIB + 4096, 16 * MIB, 12 * MIB + 100, 8 * MIB]
CONFIGS = [(4 * MIB, 16), (1 * MIB, 16), (4 * MIB, 4), (256 * 1024, 32)]  # (chunk bytes, READs in flight)


def ib_read_bw(ip: str, size: int, iters: int, port: int) -> float:
    """perftest's ``BW average`` in MiB/s, server and client as two processes."""
    common = ["ib_read_bw", "-d", "rxe0", "-R", "-F", "-s", str(size), "-n", str(iters), "-p", str(port)]
    server = subprocess.Popen(["timeout", "120", *common], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)  # perftest's server must listen before the client connects
    client = subprocess.run(["timeout", "120", *common, ip], capture_output=True, text=True)
    server.communicate(timeout=130)
    rows = [line.split() for line in client.stdout.splitlines() if re.match(r"\s*\d+\s+\d+\s+[\d.]+\s+[\d.]+", line)]
    if client.returncode or not rows:
        raise RuntimeError(f"ib_read_bw failed ({client.returncode}): {client.stdout[-800:]} {client.stderr[-400:]}")
    return float(rows[-1][3])


def pull(descriptor: dict, paths: list[Path], digests: list[str], chunk: int, depth: int) -> float:
    ranges, cursor = [], 0
    for i, path in enumerate(paths):
        ranges.append(ByteRange(i, 0, path.stat().st_size, cursor))
        cursor += path.stat().st_size
    dest = mmap.mmap(-1, cursor)
    transport = RdmaTransport(descriptor, chunk_bytes=chunk, depth=depth)
    try:
        started = time.perf_counter()
        transport.fetch(ranges, memoryview(dest))
        seconds = time.perf_counter() - started
    finally:
        transport.close()
    got = [hashlib.sha256(memoryview(dest)[r.dest_offset:r.dest_offset + r.length]).hexdigest() for r in ranges]
    dest.close()
    if got != digests:
        raise RuntimeError("pulled bytes differ from the files")
    return cursor / seconds / MIB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip", default="10.99.0.1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    mtu = Path("/sys/class/net/rxenet0/mtu").read_text().strip() if Path("/sys/class/net/rxenet0/mtu").exists() else "?"
    with tempfile.TemporaryDirectory() as tmp:
        rng, paths = random.Random(1), []
        for i, size in enumerate(FILE_SIZES):
            paths.append(Path(tmp) / f"model-{i}.safetensors")
            paths[-1].write_bytes(rng.randbytes(size))
        digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        total = sum(FILE_SIZES)
        baseline: dict[int, list[float]] = {c: [] for c, _ in CONFIGS}
        pulls: dict[tuple[int, int], list[float]] = {cd: [] for cd in CONFIGS}
        exporter = RdmaExporter(args.ip, 7471).export_files(paths)
        try:
            # Rounds interleave the two paths so both see the same load on the host's cores.
            for r in range(args.rounds):
                for chunk in baseline:
                    baseline[chunk].append(ib_read_bw(args.ip, chunk, max(5, total // chunk), 18515 + r))
                for chunk, depth in CONFIGS:
                    pulls[(chunk, depth)].append(pull(exporter.descriptor(), paths, digests, chunk, depth))
                print(f"round {r}: ib_read_bw {baseline} pulls {pulls}", flush=True)
        finally:
            exporter.close()
    summary = summarize(baseline, pulls, total, mtu, args.rounds)
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        merge_results(summary)


def summarize(baseline: dict, pulls: dict, total: int, mtu: str, rounds: int) -> dict:
    best_base = {c: max(runs) for c, runs in baseline.items()}
    best_pull = {cd: max(runs) for cd, runs in pulls.items()}
    name = {cd: f"{cd[0] >> 10}KiB x{cd[1]}" for cd in pulls}
    top = max(best_pull, key=best_pull.get)
    return {
        "rdma_ratio": best_pull[top] / max(best_base.values()),
        "rdma_target_ratio": 0.9,
        "rdma_best_config": {"chunk_bytes": top[0], "depth": top[1]},
        "rdma_ratio_same_size": {name[cd]: best_pull[cd] / best_base[cd[0]] for cd in pulls},
        "rdma_pull_mib_s": {name[cd]: runs for cd, runs in pulls.items()},
        "rdma_ib_read_bw_mib_s": {f"{c >> 10}KiB": runs for c, runs in baseline.items()},
        "rdma_model_bytes": total,
        "rdma_statistic": (f"{rounds} interleaved rounds; rdma_ratio = best pull of any configuration / "
                           f"best ib_read_bw of any message size; rdma_ratio_same_size per configuration"),
        "rdma_link": f"Soft-RoCE rxe0 loopback on a dummy netdev (MTU {mtu}), exporter and puller in one VM",
        "rdma_machine": "2-core x86-64 KVM guest, Soft-RoCE rxe under TCG",
        "rdma_date": subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip(),
        "rdma_note": "TCG emulation: the MiB/s say nothing about real RDMA speed; only the ratio means anything",
    }


def merge_results(summary: dict) -> None:
    """Keep what others wrote (``tcp_ratio`` and friends); replace only the rdma keys."""
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data = {key: value for key, value in data.items() if not key.startswith("rdma_")}  # no stale keys
    data.update(summary)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
