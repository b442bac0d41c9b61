"""Time to a ready engine on a model switch: the peer loader against vLLM's default loader.

    .venv/bin/python bench/engine_switch.py                   # ~1.4 GB random Llama, 2 rounds
    .venv/bin/python bench/engine_switch.py --hidden 512 --layers 4   # smoke run (~100 MB)

Model: a random Llama (``workers.tiny_model``, hidden 1536, 12 layers, MLP 4096: ~1.4 GB of
float32) in bench/.cache/. A weight server process (``python -m rdma_loader --in-ram``)
holds it in RAM, as a worker with that model resident would. Each case is a fresh process
(``vllm`` imported before the clock) timing ``vllm.LLM(...)`` until it returns, i.e. until the
engine is ready to generate:

- ``default``: ``load_format="safetensors"`` from the local directory;
- ``peer-auto``: ``load_format="nightshift-peer"`` with the peer and the local disk; the disk's
  bandwidth is probed (16 MiB read), the peer's is what ``--peer-bandwidth`` says (default:
  the best pull measured by bench/weight_pull.py in bench/results/weight_pull.json);
- ``peer-forced``: the same with the disk's bandwidth set to 1 byte/s, so the peer serves all.

Each case runs with the page cache warm (the files read just before) and cold
(``posix_fadvise(POSIX_FADV_DONTNEED)`` on every file of the model directory first). Besides
the time to ready, ``weights_s`` is the weight-loading step alone: the peer loader's own
``load_weights`` (manifest, choice, pull, verify, ``model.load_weights``) from its report, and
vLLM's "Loading weights took" for the default loader. Medians over the rounds are merged into
bench/results/weight_pull.json under ``engine_switch``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "weight_pull.json"
SECRET = "bench-cluster-secret-" + "0" * 32
CASES = ("default", "peer-auto", "peer-forced")


def run_case(model: str, case: str, port: int, peer_bandwidth: float, secret_file: str, report: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    args: dict = {"load_format": "safetensors"}
    if case != "default":
        extra = {"peers": [{"host": "127.0.0.1", "port": port, "bandwidth_bytes_s": peer_bandwidth}],
                 "secret_file": secret_file, "streams": 4, "report_file": report}
        if case == "peer-forced":
            extra["disk_bandwidth_bytes_s"] = 1.0
        args = {"load_format": "nightshift-peer", "model_loader_extra_config": extra}
    start = time.perf_counter()
    llm = LLM(model=model, enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=512,
              dtype="float32", **args)
    ready_s = time.perf_counter() - start
    llm.llm_engine.engine_core.shutdown()
    print(json.dumps({"ready_s": ready_s}), flush=True)


def evict(model: Path) -> None:
    for path in model.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(model: Path) -> None:
    for path in model.iterdir():
        path.read_bytes()


def cold_read_rate(model: Path) -> float:
    """What the disk itself gives: a cold sequential read of the largest file."""
    path = max(model.glob("*.safetensors"), key=lambda p: p.stat().st_size)
    evict(model)
    start = time.perf_counter()
    size = len(path.read_bytes())
    return size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peer-bandwidth", type=float)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from workers.tiny_model import TinyModelShape, make_tiny_model

    shape = TinyModelShape(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 64,
                           intermediate_size=args.hidden * 8 // 3 // 64 * 64)
    model = make_tiny_model(CACHE / f"switch-h{args.hidden}-l{args.layers}", shape)
    size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    peer_bandwidth = args.peer_bandwidth or _measured_pull_rate() or 1.1e9
    work = CACHE / "engine_switch"
    work.mkdir(parents=True, exist_ok=True)
    secret_file = work / "secret"
    secret_file.write_text(SECRET)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "rdma_loader", str(model), "--in-ram",
                               "--secret-file", str(secret_file)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    port = json.loads(server.stdout.readline())["port"]
    disk_rate = cold_read_rate(model)
    runs = []
    try:
        for round_ in range(1, args.rounds + 1):
            for cache in ("warm", "cold"):
                for case in CASES:
                    evict(model) if cache == "cold" else warm(model)
                    report = work / f"{case}-{cache}.json"
                    report.unlink(missing_ok=True)
                    out = subprocess.run([sys.executable, __file__, "--case", case, str(model), str(port),
                                          str(peer_bandwidth), str(secret_file), str(report)],
                                         env=env, capture_output=True, text=True, timeout=900)
                    if out.returncode != 0:
                        raise SystemExit(f"{case}/{cache} failed:\n{out.stderr[-4000:]}")
                    ready = json.loads(out.stdout.strip().splitlines()[-1])["ready_s"]
                    pulled = json.loads(report.read_text()) if report.is_file() else {}
                    sources = [(s["kind"], s["verified_bytes"]) for s in pulled.get("sources", [])]
                    weights_s = pulled.get("load_weights_s") or _vllm_weights_s(out.stdout + out.stderr)
                    runs.append({"round": round_, "cache": cache, "case": case, "ready_s": ready,
                                 "weights_s": weights_s, "pull_s": pulled.get("seconds"),
                                 "fallback": pulled.get("fallback"), "sources": sources})
                    print(f"{cache:4} {case:11} ready in {ready:6.2f} s, weights {weights_s or 0:6.2f} s "
                          f"{sources or pulled.get('fallback', '')}", flush=True)
    finally:
        server.terminate()
        server.wait()
    result = {"model_bytes": size, "shape": shape.__dict__, "dtype": "float32",
              "peer_bandwidth_bytes_s_configured": peer_bandwidth, "disk_cold_read_bytes_s": disk_rate,
              "median_ready_s": _medians(runs, "ready_s"), "median_weights_s": _medians(runs, "weights_s"),
              "runs": runs, "machine": _machine(), "date": datetime.now(UTC).date().isoformat()}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if not args.no_write:
        data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        data["engine_switch"] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def _medians(runs: list[dict], key: str) -> dict[str, float | None]:
    import statistics

    out = {}
    for cache in ("warm", "cold"):
        for case in CASES:
            values = [r[key] for r in runs if r["case"] == case and r["cache"] == cache and r[key] is not None]
            out[f"{cache}/{case}"] = statistics.median(values) if values else None
    return out


def _vllm_weights_s(log_text: str) -> float | None:
    """vLLM's own 'Loading weights took N seconds' (the default loader logs it)."""
    import re

    found = re.findall(r"Loading weights took ([0-9.]+) seconds", log_text)
    return float(found[-1]) if found else None


def _measured_pull_rate() -> float | None:
    if RESULTS.is_file():
        return (json.loads(RESULTS.read_text()).get("tcp_best_bytes_per_s") or {}).get("pull")
    return None


def _machine() -> str:
    import platform

    return (f"{os.cpu_count()}-core {platform.machine()} KVM guest, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        run_case(sys.argv[3], sys.argv[2], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7])
    else:
        main()
