"""Turning a user's submission into a queued task: validate at the edge, store, queue.

The web API and the CLI (through the API) both end up here, so the rules are the same
everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from jobs import BATCH_KIND, BatchFileError, LineError, error_line, parse_batch
from scheduler import store
from scheduler.db import session_scope
from scheduler.errors import InvalidSubmissionError, SubmissionTooLargeError, UnknownModelError
from scheduler.models import ArtifactKind, TaskCreate, utcnow
from scheduler.settings import ModelSpec, Settings


@dataclass(frozen=True)
class BatchReceipt:
    task_id: int
    accepted: int
    rejected: tuple[LineError, ...]


def resolve_model(settings: Settings, alias: str) -> ModelSpec:
    spec = settings.models.get(alias)
    if spec is None:
        raise UnknownModelError(alias, list(settings.models))
    return spec


def check_deadline(deadline_at: datetime | None) -> None:
    if deadline_at is None:
        return
    if deadline_at.tzinfo is None:
        raise InvalidSubmissionError("deadline", f"{deadline_at.isoformat()} has no time zone; "
                                     "give one, e.g. 2026-11-23T07:00:00+01:00")
    if deadline_at <= utcnow():
        raise InvalidSubmissionError("deadline", f"{deadline_at.isoformat()} is in the past; "
                                     "give a time later than now")


def submit_batch(
    settings: Settings,
    data: bytes,
    *,
    model: str,
    owner: str = "local",
    priority: int = 0,
    deadline_at: datetime | None = None,
    title: str = "",
) -> BatchReceipt:
    """Validate an OpenAI Batch file and queue it as one task. Bad lines are kept as errors
    of the task; a file with no good line at all is refused with every line's error."""
    spec = resolve_model(settings, model)
    check_deadline(deadline_at)
    if len(data) > settings.max_batch_bytes:
        raise SubmissionTooLargeError("file", f"{len(data)} bytes; the limit is "
                                      f"{settings.max_batch_bytes} bytes (NIGHTSHIFT_MAX_BATCH_BYTES)")
    try:
        parsed = parse_batch(data, max_model_len=spec.max_model_len, max_lines=settings.max_batch_lines)
    except BatchFileError as exc:
        raise InvalidSubmissionError(exc.field, exc.message) from exc
    if not parsed.requests:
        raise InvalidSubmissionError(
            "file", f"none of the {parsed.line_count} lines is a valid request",
            details=[e.message for e in parsed.rejected],
        )
    create = TaskCreate(kind=BATCH_KIND, model=model, owner=owner, priority=priority,
                        deadline_at=deadline_at, title=title, max_attempts=settings.max_attempts,
                        input={"lines": parsed.line_count, "requests": len(parsed.requests),
                               "rejected": len(parsed.rejected)})
    with session_scope(settings.database_url) as session:
        task = store.create_task(session, create)
        batch_id = f"task-{task.id}"
        store.add_batch_lines(
            session, task,
            [(r.line_no, r.custom_id, json.dumps({"url": r.url, "body": r.body})) for r in parsed.requests],
            [error_line(batch_id, e) for e in parsed.rejected],
        )
        relative = f"artifacts/{task.id}/input.jsonl"
        path = settings.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        store.add_artifact(session, task.id, ArtifactKind.BATCH_INPUT, relative, len(data),
                           hashlib.sha256(data).hexdigest())
        return BatchReceipt(task.id, len(parsed.requests), parsed.rejected)
