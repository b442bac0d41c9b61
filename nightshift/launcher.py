"""``nightshift run``: web API, scheduler and one worker on this machine, as child processes.

Their output is interleaved with a name prefix. Ctrl-C (or SIGTERM) stops them all; if one
of them exits on its own, the others are stopped too and the exit code says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from rich.console import Console

from scheduler.settings import Settings

SERVICES = ("web", "scheduler", "worker")
_STYLES = {"web": "cyan", "scheduler": "magenta", "worker": "green"}
console = Console(soft_wrap=True)


def _pump(name: str, proc: subprocess.Popen) -> None:
    for raw in proc.stdout:
        console.print(f"[{_STYLES[name]}]{name:>9}[/] | ", end="")
        console.print(raw.rstrip("\n"), markup=False, highlight=False)


def _start(name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "nightshift", name], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, env=os.environ.copy())
    threading.Thread(target=_pump, args=(name, proc), daemon=True).start()
    return proc


def _stop(procs: dict[str, subprocess.Popen], grace_s: float = 20.0) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def run_all(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"Nightshift: data in {settings.data_dir}, API on {settings.api_url}, "
                  f"models: {', '.join(sorted(settings.models))}")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    procs = {name: _start(name) for name in SERVICES}
    code = 0
    try:
        while not stopping.is_set():
            ended = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if ended:
                console.print(f"[red]{', '.join(ended)} exited ({ended}); stopping the rest[/red]")
                code = 1
                break
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    console.print("stopping Nightshift...")
    _stop(procs)
    return code
