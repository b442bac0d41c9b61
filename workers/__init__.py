"""Celery task bodies, the vLLM engine holder, and each worker's presence in the database."""

from workers.app import create_worker_app, run_worker
from workers.engine import EngineHolder, VllmEngine, configure_cpu_backend
from workers.presence import Presence, describe_hardware
from workers.tasks import WorkerContext, run_batch_task, run_patch_task

__all__ = [
    "EngineHolder",
    "Presence",
    "VllmEngine",
    "WorkerContext",
    "configure_cpu_backend",
    "create_worker_app",
    "describe_hardware",
    "run_batch_task",
    "run_patch_task",
    "run_worker",
]
