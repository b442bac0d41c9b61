"""RDMA pull throughput against ib_read_bw on the same rxe device, in one Soft-RoCE VM boot.

Run inside the VM (``make bench-rdma``; add ``RDMA_VM_ARGS=--mtu 9000`` for jumbo frames).
Each of ``--rounds`` rounds (interleaved: the host's cores are shared, and TCG speed follows
their load) runs, in this order:

1. ``ib_read_bw -R -e -o 16`` (perftest, rdma_cm): event-driven completions and 16 READs
   outstanding, the way ``RdmaTransport`` works, with its message size (4 MiB) and about the
   model's bytes (14 messages). This is the baseline: the link's limit for a puller that does
   not busy-poll;
2. ``RdmaTransport.fetch`` (4 MiB chunks, 16 in flight, its defaults) of a model-sized set of
   files (56 MiB in four files, whole-file ranges into one buffer) from an ``RdmaExporter``
   (its own process); the pulled bytes are checked (sha256) after each round, outside the timing;
3. ``ib_read_bw -R`` with perftest's defaults (busy-polling, the device's maximum of outstanding
   READs), same size and bytes: context only. Under TCG a busy-polling process takes vCPU time
   from the emulated rxe that serves it, so this figure is not a limit.

``rdma_ratio`` = median pull / median event-driven ib_read_bw. perftest's MB is 2**20 bytes,
so all rates are MiB/s. A run perftest reports as 0 MiB/s is kept in the raw list but left out
of the statistics (and counted). Results are merged into bench/results/weight_pull.json (keys
not starting with ``rdma_`` are kept). Under TCG only the ratio means anything, not the MiB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdma_loader.rdma import DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH, RdmaTransport  # noqa: E402
from rdma_loader.rdma_export import RdmaExporter  # noqa: E402
from rdma_loader.transport import ByteRange  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "weight_pull.json"
MIB = 1 << 20
FILE_SIZES = [20 * MIB + 4096, 16 * MIB, 12 * MIB + 100, 8 * MIB]
CHUNK_BYTES, DEPTH = DEFAULT_CHUNK_BYTES, DEFAULT_DEPTH
EVENT_ARGS = ["-e", "-o", str(DEPTH)]  # the fair baseline: sleeps on CQ events, 16 READs in flight
BUSY_ARGS: list[str] = []  # perftest's defaults: busy-polls, the device's maximum in flight


def ib_read_bw(ip: str, extra: list[str], size: int, iters: int, port: int) -> float:
    """perftest's ``BW average`` in MiB/s, server and client as two processes."""
    common = ["ib_read_bw", "-d", "rxe0", "-R", "-F", *extra, "-s", str(size), "-n", str(iters), "-p", str(port)]
    server = subprocess.Popen(["timeout", "120", *common], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)  # perftest's server must listen before the client connects
    client = subprocess.run(["timeout", "120", *common, ip], capture_output=True, text=True)
    server.communicate(timeout=130)
    rows = [line.split() for line in client.stdout.splitlines() if re.match(r"\s*\d+\s+\d+\s+[\d.]+\s+[\d.]+", line)]
    if client.returncode or not rows:
        raise RuntimeError(f"ib_read_bw {' '.join(extra)} failed ({client.returncode}): "
                           f"{client.stdout[-800:]} {client.stderr[-400:]}")
    return float(rows[-1][3])


def pull(descriptor: dict, paths: list[Path], digests: list[str]) -> float:
    ranges, cursor = [], 0
    for i, path in enumerate(paths):
        ranges.append(ByteRange(i, 0, path.stat().st_size, cursor))
        cursor += path.stat().st_size
    dest = mmap.mmap(-1, cursor)
    transport = RdmaTransport(descriptor, chunk_bytes=CHUNK_BYTES, depth=DEPTH)
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    mtu_file = Path("/sys/class/net/rxenet0/mtu")
    mtu = mtu_file.read_text().strip() if mtu_file.exists() else "?"
    total = sum(FILE_SIZES)
    iters = max(5, round(total / CHUNK_BYTES))
    runs: dict[str, list[float]] = {"event": [], "pull": [], "busy": []}
    load: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        rng, paths = random.Random(1), []
        for i, size in enumerate(FILE_SIZES):
            paths.append(Path(tmp) / f"model-{i}.safetensors")
            paths[-1].write_bytes(rng.randbytes(size))
        digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        exporter = RdmaExporter(args.ip, 7471).export_files(paths)
        try:
            for r in range(args.rounds):
                load.append(os.getloadavg()[0])
                runs["event"].append(ib_read_bw(args.ip, EVENT_ARGS, CHUNK_BYTES, iters, 18515 + 2 * r))
                runs["pull"].append(pull(exporter.descriptor(), paths, digests))
                runs["busy"].append(ib_read_bw(args.ip, BUSY_ARGS, CHUNK_BYTES, iters, 18516 + 2 * r))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()), flush=True)
        finally:
            exporter.close()
    summary = summarize(runs, total, iters * CHUNK_BYTES, mtu, args.rounds, load)
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        merge_results(summary)


def stats(values: list[float]) -> dict:
    valid = [v for v in values if v > 0]  # perftest sometimes prints 0.00 for a run that moved data
    return {"median": statistics.median(valid), "min": min(valid), "max": max(valid),
            "runs": values, "runs_left_out_as_zero": len(values) - len(valid)}


def summarize(runs: dict, total: int, perftest_bytes: int, mtu: str, rounds: int, load: list[float]) -> dict:
    pull_s, event_s, busy_s = stats(runs["pull"]), stats(runs["event"]), stats(runs["busy"])
    return {
        "rdma_ratio": pull_s["median"] / event_s["median"],
        "rdma_target_ratio": 0.9,
        "rdma_ratio_vs_busy_poll": pull_s["median"] / busy_s["median"],
        # Paired within a round (same host load): a second view of the same runs, with its spread.
        "rdma_ratio_per_round": [p / e if e > 0 else None for p, e in zip(runs["pull"], runs["event"])],
        "rdma_pull_mib_s": pull_s,
        "rdma_ib_read_bw_mib_s": event_s,
        "rdma_ib_read_bw_busy_poll_mib_s": busy_s,
        "rdma_config": {
            "chunk_bytes": CHUNK_BYTES, "depth": DEPTH,
            "ib_read_bw": f"ib_read_bw -d rxe0 -R -F {' '.join(EVENT_ARGS)} -s {CHUNK_BYTES} -n {perftest_bytes // CHUNK_BYTES}",
            "ib_read_bw_busy_poll": f"ib_read_bw -d rxe0 -R -F -s {CHUNK_BYTES} -n {perftest_bytes // CHUNK_BYTES}",
        },
        "rdma_model_bytes": total,
        "rdma_ib_read_bw_bytes": perftest_bytes,
        "rdma_rounds": rounds,
        "rdma_guest_load_1min": load,
        "rdma_statistic": (f"{rounds} interleaved rounds (event-driven ib_read_bw, pull, busy-poll ib_read_bw) in one "
                           f"VM boot; rdma_ratio = median pull / median event-driven ib_read_bw (-e -o {DEPTH}, "
                           f"same message size and bytes); rdma_ratio_vs_busy_poll for context"),
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
