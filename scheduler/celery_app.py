"""All Celery configuration, used by the producer (scheduler, web) and the workers alike.

Tasks are sent by name with ids only, so this side never imports worker code.
"""

from __future__ import annotations

from celery import Celery

from scheduler.settings import Settings

TASK_RUN_BATCH = "nightshift.run_batch"
TASK_RUN_PATCH = "nightshift.run_patch"
QUEUE = "nightshift"


def worker_queue(worker_name: str) -> str:
    """The Celery queue only ``worker_name`` reads (besides the shared ``QUEUE``): the planner
    sends each worker its next task there."""
    return f"{QUEUE}.{worker_name}"


def _transport_options(settings: Settings) -> dict:
    if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        # Redis redelivers unacknowledged messages after this long; it must exceed the
        # longest task or a running task would be handed to a second worker.
        return {"visibility_timeout": settings.visibility_timeout_s}
    # The SQL transport passes its options to create_engine. It never redelivers a message
    # taken by a worker that died; the scheduler requeues such tasks (scheduler.dispatch).
    return {}


def make_celery(settings: Settings) -> Celery:
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the SQLite broker lives there
    app = Celery("nightshift", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        # Long GPU work: take one message at a time and acknowledge it only when done, so a
        # worker that dies mid-task leaves the message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
