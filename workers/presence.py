"""A worker's row in the database: what it is, what it does, and a heartbeat proving it lives.

The heartbeat runs on its own thread so it keeps beating while a task holds the main thread.
A worker killed outright stops beating; the scheduler then requeues its task.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from scheduler import Settings, session_scope, store
from scheduler.models import WorkerState

log = logging.getLogger(__name__)


def describe_hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "gpus": []}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import pynvml  # from nvidia-ml-py, installed with the gpu extra
    except ImportError:
        return info
    try:
        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            info["gpus"].append({"name": pynvml.nvmlDeviceGetName(handle),
                                 "memory_gib": round(mem.total / 2**30, 1)})
    except pynvml.NVMLError as exc:  # driver missing or broken: report no GPU, keep working
        log.warning("NVML unavailable: %s", exc)
    return info


class Presence:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.worker_name
        self._fields: dict[str, Any] = {"state": WorkerState.STARTING, "current_task_id": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        # What an idle worker shows instead (outside-window, owner-active); see workers.guard.
        self.idle_state: Callable[[], tuple[WorkerState, str | None]] | None = None
        # Told the planner's prefetch hint after each heartbeat; see workers.prefetch.
        self.on_hint: Callable[[str | None], None] | None = None

    def start(self) -> list[int]:
        """Announce this worker and take back what an earlier run under this name left
        running (it was killed: its tasks go back to the queue). Returns those task ids."""
        with session_scope(self.settings.database_url) as session:
            released = store.release_worker_tasks(
                session, self.name, f"worker {self.name} restarted while running it")
            store.record_heartbeat(session, self.name, hostname=socket.gethostname(),
                                   hardware=describe_hardware(), state=WorkerState.IDLE,
                                   current_task_id=None, resident_model=None)
        self._fields["state"] = WorkerState.IDLE
        self._thread.start()
        return released

    def set(self, **fields: Any) -> None:
        """Change what this worker reports (state, resident_model, current_task_id) now."""
        with self._lock:
            self._fields.update(fields)
        self._beat()

    @property
    def current_task_id(self) -> int | None:
        with self._lock:
            return self._fields.get("current_task_id")

    def stop(self) -> None:
        self._stop.set()
        with session_scope(self.settings.database_url) as session:
            store.mark_worker_stopped(session, self.name)

    def _beat(self, refresh_idle: bool = False) -> None:
        with self._lock:
            fields = dict(self._fields)
        if refresh_idle and self.idle_state is not None and fields["state"] == WorkerState.IDLE:
            fields["state"], fields["state_reason"] = self.idle_state()
        with session_scope(self.settings.database_url) as session:
            store.record_heartbeat(session, self.name, **fields)
            hint = store.get_worker(session, self.name).prefetch_model  # the row exists now
        if refresh_idle and self.on_hint is not None:
            self.on_hint(hint)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            try:
                self._beat(refresh_idle=True)
            except Exception:  # a busy or unreachable database must not kill the worker
                log.exception("heartbeat failed; trying again in %ss", self.settings.worker_heartbeat_s)
