"""How fast the pages render with a long history: 10,000 finished tasks (patches with their
candidates and diffs, batches), their attempts, a queue and a few workers, in SQLite.

Starts `nightshift web` as a user would, logs in, and times each page over real HTTP on
loopback. Writes bench/results/web_pages.json: per page ``p95_ms`` (the target is under 200 ms)
and ``p50_ms``.

    .venv/bin/python bench/web_pages.py [--tasks 10000] [--requests 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler import Settings, get_engine, session_scope  # noqa: E402
from scheduler.models import Attempt, Task, Worker, WorkerEvent  # noqa: E402
from web import auth  # noqa: E402

PASSWORD = "benchmark password"
DIFF = "".join(f"-    old line {i}\n+    new line {i}\n" for i in range(40))


def _patch_result(rng: random.Random) -> dict:
    candidates = [{"index": i, "round": 1, "answer": "x" * 400, "applied": True, "tested": True,
                   "diff": f"diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,40 +1,40 @@\n{DIFF}",
                   "tests": {"exit_code": 0, "timed_out": False, "failed": [], "passed": [f"t{j}" for j in range(30)],
                             "output_tail": "." * 500, "duration_s": 2.5},
                   "newly_failing": [], "fixed_targets": ["t1"], "critique": "Fine." * 20} for i in range(4)]
    return {"verdict": rng.choice(["fixed", "partial", "failed", "stuck"]), "reason": "1 failing test(s) now pass",
            "chosen": 0, "candidates": candidates, "branch": "nightshift/2026-11-21/item", "tokens_in": 900,
            "tokens_out": 1200, "elapsed_s": 300.0, "model_s": 200.0, "tests_s": 90.0,
            "baseline": {"exit_code": 1, "timed_out": False, "failed": ["t1"], "passed": [], "output_tail": "",
                         "duration_s": 2.0}}


def fill(settings: Settings, n_tasks: int) -> None:
    rng = random.Random(7)
    engine = get_engine(settings.database_url)
    now = datetime.now(UTC)
    tasks, attempts, events = [], [], []
    for i in range(1, n_tasks + 1):
        finished = now - timedelta(minutes=3 * (n_tasks - i))  # about 480 a night, newest last
        started = finished - timedelta(minutes=rng.uniform(1, 10))
        patch = i % 3 != 0
        tasks.append({"id": i, "kind": "patch" if patch else "batch", "model": "m", "owner": f"user{i % 5}",
                      "priority": 0, "title": f"Item number {i}", "input": {}, "status": "succeeded",
                      "attempts": 1, "max_attempts": 3, "progress_done": 100, "progress_total": 100,
                      "worker_name": f"w{i % 4}", "created_at": started, "updated_at": finished,
                      "started_at": started, "finished_at": finished, "review": "pending",
                      "result": _patch_result(rng) if patch else {"succeeded": 100, "failed": 0}})
        attempts.append({"task_id": i, "number": 1, "worker_name": f"w{i % 4}", "status": "succeeded",
                         "started_at": started, "ended_at": finished, "tokens_in": 900, "tokens_out": 1200,
                         "energy_j": 50_000.0, "energy_method": "nvml-counter"})
        if i % 10 == 0:  # a swap before every tenth task, a suspension before every 25th
            events.append({"worker_name": f"w{i % 4}", "kind": "swap", "started_at": started - timedelta(seconds=40),
                           "ended_at": started, "task_id": i, "model": "m", "detail": "a -> m"})
        if i % 25 == 0:
            events.append({"worker_name": f"w{i % 4}", "kind": "suspend", "task_id": i, "model": "m",
                           "started_at": started + timedelta(seconds=20), "ended_at": started + timedelta(seconds=50),
                           "detail": "programs: steam"})
    queued = []
    for j in range(200):  # tonight's queue
        queued.append({"id": n_tasks + 1 + j, "kind": "patch", "model": "m", "owner": "user1", "priority": j % 3,
                      "title": f"Queued {j}", "input": {}, "status": "queued", "attempts": 0, "max_attempts": 3,
                      "progress_done": 0, "progress_total": 0, "created_at": now, "updated_at": now,
                      "review": "pending"})
    with engine.begin() as conn:
        conn.execute(sa.insert(Task.__table__), tasks)
        conn.execute(sa.insert(Task.__table__), queued)
        conn.execute(sa.insert(Attempt.__table__), attempts)
        conn.execute(sa.insert(WorkerEvent.__table__), events)
    with session_scope(settings.database_url) as session:
        for w in range(4):
            session.add(Worker(name=f"w{w}", hostname="bench", state="idle", hardware={"gpus": []}))


def start_web(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "NIGHTSHIFT_DATA_DIR": str(settings.data_dir), "NIGHTSHIFT_API_PORT": str(port),
           "NIGHTSHIFT_CONFIG": str(settings.data_dir / "none.toml")}
    (settings.data_dir / "none.toml").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "nightshift", "web"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"the web process did not start: {log.read_text()[-2000:]}")


def log_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"csrf_token": csrf, "username": "admin", "password": PASSWORD})
    assert resp.status_code in (200, 303), resp.text
    return client


def time_page(client: httpx.Client, path: str, n: int) -> dict:
    client.get(path)  # warm up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        resp = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200, (path, resp.status_code)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
            "bytes": len(resp.content), "requests": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), demo_model=False)
        started = time.perf_counter()
        fill(settings, args.tasks)
        auth.set_password(settings, "admin", PASSWORD)
        print(f"filled {args.tasks} finished tasks in {time.perf_counter() - started:.1f} s")
        port = 18000 + os.getpid() % 1000
        proc = start_web(settings, port, Path(tmp) / "web.log")
        try:
            client = log_in(f"http://127.0.0.1:{port}")
            from web.views import night_of

            last_night = night_of(datetime.now(UTC)).isoformat()
            old_night = night_of(datetime.now(UTC) - timedelta(days=15)).isoformat()
            pages = {"review": "/review", "review_page_5": "/review?page=5", "review_old_night": f"/review?night={old_night}", "tonight": "/tonight",
                     "tonight_live": "/tonight/live", "item": f"/review/{args.tasks - 1 - (args.tasks - 1) % 3 + 1}",
                     "night_report": f"/nights/{last_night}", "evening": "/"}
            results = {name: time_page(client, path, args.requests) for name, path in pages.items()}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    for name, r in results.items():
        print(f"{name:20s} p50 {r['p50_ms']:7.1f} ms   p95 {r['p95_ms']:7.1f} ms   {r['bytes']:>8} bytes")
    out = {"pages": results, "tasks": args.tasks, "requests_per_page": args.requests,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.now(UTC).date().isoformat(), "target_p95_ms": 200}
    out.update({name: {"p95_ms": r["p95_ms"]} for name, r in results.items()})
    path = ROOT / "bench" / "results" / "web_pages.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
