"""Weight pull over TCP against a plain socket copy of the same bytes on the same link.

    .venv/bin/python bench/weight_pull.py                    # ~2 GB model, 1/2/4 streams, 3 rounds
    .venv/bin/python bench/weight_pull.py --size-mib 256 --rounds 1   # smoke run

Model: random F32 tensors (16 to 96 MiB) in two safetensors files, cached in
bench/.cache/weight_pull/. One weight server process (``python -m rdma_loader``, the
page cache and ``sendfile``) serves it on 127.0.0.1; this process pulls it.

Three paths, each with the same number of streams, each into a fresh anonymous mmap:
- baseline: a plain sender process (``sendfile`` of the same file bytes, no protocol, no
  checks) to receivers doing ``recv_into``: the link's limit in this run;
- transport: ``TcpTransport.fetch`` of every tensor range (handshake done before the clock);
- pull: ``Puller([PeerSource]).pull(manifest)``: connect, authenticate, fetch the manifest,
  fetch and verify every tensor's checksum (xxh3-128 with xxhash installed; what a model
  switch gets).

The paths alternate within each round; the best of the rounds per path and stream count is
kept. ``tcp_ratio`` = best pull / best baseline (both over every stream count);
``tcp_transport_ratio`` the same for the transport alone. With ``--cap-bytes-per-s`` the weight
server and the baseline sender are both paced to that rate (a link slower than loopback, e.g.
1.1e9 for 10 GbE) and the results go under ``tcp_capped`` instead. Results are merged into
bench/results/weight_pull.json (the RDMA engineer's keys are kept).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdma_loader.manifest import build_manifest  # noqa: E402
from rdma_loader.puller import Puller  # noqa: E402
from rdma_loader.random_model import write_random_model  # noqa: E402
from rdma_loader.sources import PeerSource  # noqa: E402
from rdma_loader.tcp import TcpTransport  # noqa: E402
from rdma_loader.transport import ByteRange  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "weight_pull"
RESULTS = ROOT / "bench" / "results" / "weight_pull.json"
SECRET = "bench-cluster-secret-" + "0" * 32
MIB = 1 << 20


def start_server(model: Path, cap: float) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "NIGHTSHIFT_CLUSTER_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    capped = ["--max-bytes-per-s", str(cap)] if cap else []
    proc = subprocess.Popen([sys.executable, "-m", "rdma_loader", str(model), *capped], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, json.loads(proc.stdout.readline())["port"]


# --- baseline: plain sockets ---------------------------------------------------------------


def sender_main(port: int, paths: list[str], streams: int, cap: float) -> None:
    """Accept ``streams`` connections; stream k sends its share of the files' bytes (paced in
    1 MiB chunks to ``cap`` bytes/s in all, like the weight server, when ``cap`` is set)."""
    from rdma_loader.server import _PACED_CHUNK, _chunks, _Pacer

    listener = socket.create_server(("127.0.0.1", port))
    conns = [listener.accept()[0] for _ in range(streams)]
    files = [open(p, "rb") for p in paths]
    shares = _shares([os.path.getsize(p) for p in paths], streams)
    pacer = _Pacer(cap) if cap else None

    def send(conn, share):
        for index, offset, length in share:
            for start, size in _chunks(offset, length, _PACED_CHUNK if pacer else length):
                if pacer is not None:
                    pacer.wait(size)
                conn.sendfile(files[index], start, size)
        conn.close()

    threads = [threading.Thread(target=send, args=(c, s)) for c, s in zip(conns, shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _shares(sizes: list[int], streams: int) -> list[list[tuple[int, int, int]]]:
    ranges = [ByteRange(i, 0, size, sum(sizes[:i])) for i, size in enumerate(sizes)]
    from rdma_loader.tcp import split_ranges

    return [[(r.file_index, r.offset, r.length) for r in part] for part in split_ranges(ranges, streams)]


def baseline(paths: list[Path], streams: int, cap: float) -> float:
    sizes = [p.stat().st_size for p in paths]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = subprocess.Popen([sys.executable, __file__, "--sender", str(port), str(streams), str(cap),
                               *map(str, paths)])
    socks = []
    while len(socks) < streams:
        try:
            socks.append(socket.create_connection(("127.0.0.1", port)))
        except ConnectionRefusedError:
            time.sleep(0.02)
    dest = mmap.mmap(-1, sum(sizes))
    view = memoryview(dest)
    parts = _shares(sizes, streams)

    def receive(sock, part):
        for index, offset, length in part:
            start = sum(sizes[:index]) + offset
            v = view[start:start + length]
            while v:
                n = sock.recv_into(v)
                if not n:
                    raise RuntimeError("sender closed early")
                v = v[n:]

    started = time.perf_counter()
    threads = [threading.Thread(target=receive, args=(s, p)) for s, p in zip(socks, parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    sender.wait()
    for s in socks:
        s.close()
    view.release()
    dest.close()
    return sum(sizes) / elapsed


# --- the weight loader ---------------------------------------------------------------------


def transport_only(port: int, manifest, streams: int) -> float:
    transport = TcpTransport("127.0.0.1", port, SECRET.encode(), streams=streams)
    offsets, size = manifest.packed_layout()
    dest = mmap.mmap(-1, size)
    ranges = [ByteRange(t.file_index, t.offset, t.length, offsets[i]) for i, t in enumerate(manifest.tensors)]
    started = time.perf_counter()
    transport.fetch(ranges, memoryview(dest))
    elapsed = time.perf_counter() - started
    transport.close()
    dest.close()
    return manifest.total_bytes / elapsed


def pull(port: int, manifest, streams: int) -> float:
    peer = PeerSource("127.0.0.1", port, SECRET.encode(), streams=streams)
    started = time.perf_counter()
    result = Puller([peer]).pull(manifest)
    elapsed = time.perf_counter() - started
    assert result.reports[0].verified_bytes == manifest.total_bytes, result.reports
    del result
    return manifest.total_bytes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cap-bytes-per-s", type=float, default=0.0,
                        help="pace the weight server and the baseline sender alike (a slower link)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cap = args.cap_bytes_per_s
    model = write_random_model(CACHE / f"random-{args.size_mib}mib", args.size_mib * MIB)
    manifest = build_manifest(model)
    paths = [model / f.name for f in manifest.files]
    for p in paths:  # warm the page cache: the link is measured, not the disk
        p.read_bytes()
    server, port = start_server(model, cap)
    best: dict[str, dict[int, float]] = {"baseline": {}, "transport": {}, "pull": {}}
    runs = []
    try:
        for round_ in range(1, args.rounds + 1):
            for streams in args.streams:
                for path, fn in (("baseline", lambda: baseline(paths, streams, cap)),
                                 ("transport", lambda: transport_only(port, manifest, streams)),
                                 ("pull", lambda: pull(port, manifest, streams))):
                    rate = fn()
                    runs.append({"round": round_, "path": path, "streams": streams, "bytes_per_s": rate})
                    best[path][streams] = max(best[path].get(streams, 0.0), rate)
                    print(f"round {round_} {path:9} {streams} streams {rate / 1e9:6.2f} GB/s", flush=True)
    finally:
        server.terminate()
        server.wait()
    summary = summarize(best, manifest, runs, args)
    print(json.dumps({k: v for k, v in summary.items() if k != "tcp_runs"}, indent=2))
    if cap:  # a side measurement: the headline tcp_* keys stay those of the uncapped link
        summary = {"tcp_capped": {"cap_bytes_per_s": cap, **{k.removeprefix("tcp_"): v for k, v in summary.items()}}}
    if not args.no_write:
        merge_results(summary)


def paired_ratios(runs: list[dict], path: str) -> list[float]:
    """``path`` over the baseline of the same round and stream count: noise that hits a whole
    round cancels out here."""
    rate = {(r["round"], r["streams"], r["path"]): r["bytes_per_s"] for r in runs}
    return [rate[(rnd, s, path)] / rate[(rnd, s, "baseline")]
            for (rnd, s, p) in rate if p == "baseline" and (rnd, s, path) in rate]


def summarize(best, manifest, runs, args) -> dict:
    top = {path: max(rates.values()) for path, rates in best.items()}
    paired = paired_ratios(runs, "pull")
    return {
        "tcp_ratio": top["pull"] / top["baseline"],
        "tcp_ratio_paired_median": statistics.median(paired),
        "tcp_ratio_paired_min_max": [min(paired), max(paired)],
        "tcp_transport_ratio": top["transport"] / top["baseline"],
        "tcp_target_ratio": 0.9,
        "tcp_ratio_per_streams": {str(s): best["pull"][s] / best["baseline"][s] for s in args.streams},
        "tcp_best_bytes_per_s": top,
        "tcp_best_per_streams_bytes_per_s": best,
        "tcp_model_bytes": manifest.total_bytes,
        "tcp_tensors": len(manifest.tensors),
        "tcp_statistic": f"tcp_ratio: best of {args.rounds} rounds per path and stream count, ratio of "
                         "the bests; tcp_ratio_paired_*: pull over the baseline of the same round",
        "tcp_link": "loopback 127.0.0.1, sender and receiver on the same 2 cores",
        "tcp_runs": runs,
        "tcp_machine": machine(),
        "tcp_date": datetime.now(UTC).date().isoformat(),
    }


def machine() -> str:
    return (f"{os.cpu_count()}-core {platform.machine()} KVM guest, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}")


def merge_results(summary: dict) -> None:
    """Keep what others wrote (``rdma_ratio`` and friends); replace only the tcp keys."""
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data.update(summary)
    data.setdefault("rdma_ratio", None)
    data.setdefault("rdma_note", "not measured yet: the RDMA transport's benchmark runs in the "
                                 "Soft-RoCE VM (make test-rdma); its engineer fills rdma_ratio")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        sender_main(int(sys.argv[2]), sys.argv[5:], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
