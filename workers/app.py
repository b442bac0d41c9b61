"""The worker process: one Celery worker (solo pool), one engine, one heartbeat.

Start it with ``nightshift worker``. A solo pool runs tasks in the main process, which owns
the vLLM engine; one worker process per GPU.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from scheduler import QUEUE, TASK_RUN_BATCH, TASK_RUN_PATCH, Settings, make_celery
from scheduler.celery_app import worker_queue
from scheduler.night import is_window_open
from workers.energy import EnergyMeter
from workers.engine import EngineHolder, configure_cpu_backend
from workers.guard import Guard
from workers.prefetch import Prefetcher
from workers.presence import Presence
from workers.probes import NvmlProbe, make_probes
from workers.tasks import WorkerContext, record_swaps, run_batch_task, run_patch_task
from workers.weights import ResidentServer

log = logging.getLogger(__name__)


def create_worker_app(settings: Settings) -> tuple[Celery, WorkerContext]:
    app = make_celery(settings)
    ctx = WorkerContext(settings=settings, holder=EngineHolder(settings), presence=Presence(settings))
    probes = make_probes(settings.yield_policy)
    ctx.guard = Guard(settings.yield_policy, probes,
                      window_open=lambda: is_window_open(settings, settings.worker_name))
    nvml = next((p for p in probes if isinstance(p, NvmlProbe)), NvmlProbe(settings.yield_policy.gpu_index))
    ctx.energy = EnergyMeter(nvml.device)
    ctx.presence.idle_state = ctx.guard.idle_state
    ctx.weights = ResidentServer(settings) if settings.cluster_secret_file else None
    record_swaps(ctx)
    ctx.presence.on_hint = Prefetcher(settings).hint

    @app.task(name=TASK_RUN_BATCH, acks_late=True, reject_on_worker_lost=True)
    def run_batch(task_id: int) -> dict:
        return run_batch_task(ctx, task_id)

    @app.task(name=TASK_RUN_PATCH, acks_late=True, reject_on_worker_lost=True)
    def run_patch(task_id: int) -> dict:
        return run_patch_task(ctx, task_id)

    @worker_ready.connect(weak=False)
    def _ready(**_kwargs) -> None:
        released = ctx.presence.start()
        if released:
            log.warning("requeued tasks %s left running by an earlier run of %s", released,
                        ctx.presence.name)

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_kwargs) -> None:
        if ctx.weights is not None:
            ctx.weights.stop()
        ctx.holder.release()
        ctx.presence.stop()

    return app, ctx


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    configure_cpu_backend()
    app, _ctx = create_worker_app(settings)
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", f"--queues={QUEUE},{worker_queue(settings.worker_name)}",
                     f"--hostname={settings.worker_name}", f"--loglevel={loglevel}",
                     "--without-gossip", "--without-mingle"])
