"""The JSON API. The CLI uses exactly these routes; the pages (issue 4) will too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import col, func, select

from scheduler import session_scope, store
from scheduler.dispatch import dispatch_queued
from scheduler.errors import SubmissionTooLargeError
from scheduler.models import (
    Attempt,
    AttemptPublic,
    Repository,
    RepositoryPublic,
    BatchLine,
    LineStatus,
    Task,
    TaskPublic,
    TaskStatus,
    Worker,
    WorkerPublic,
)
from scheduler.settings import Settings
from scheduler.submit import register_repository, submit_batch, submit_todo

router = APIRouter(prefix="/api")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


class RejectedLine(BaseModel):
    line: int
    custom_id: str | None
    code: str
    message: str


class BatchCreated(BaseModel):
    task_id: int
    accepted: int
    rejected: list[RejectedLine]


class TaskDetail(TaskPublic):
    attempts_detail: list[AttemptPublic]
    checkpoint: dict[str, Any] | None


class Status(BaseModel):
    queue: dict[str, int]
    workers: list[WorkerPublic]
    models: list[str]


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise SubmissionTooLargeError(
                "file", f"more than {limit} bytes; the limit is {limit} bytes "
                "(NIGHTSHIFT_MAX_BATCH_BYTES). Split the file into several batches.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/batches", status_code=201, response_model=BatchCreated)
async def create_batch(
    request: Request,
    file: Annotated[UploadFile, File(description="OpenAI Batch input, one JSON object per line")],
    model: Annotated[str, Form()],
    priority: Annotated[int, Form()] = 0,
    owner: Annotated[str, Form()] = "local",
    deadline: Annotated[datetime | None, Form()] = None,
    title: Annotated[str, Form()] = "",
) -> BatchCreated:
    settings = _settings(request)
    data = await _read_limited(file, settings.max_batch_bytes)
    receipt = submit_batch(settings, data, model=model, owner=owner, priority=priority,
                           deadline_at=deadline, title=title or (file.filename or ""))
    rejected = [RejectedLine(line=e.line_no, custom_id=e.custom_id, code=e.code, message=e.message)
                for e in receipt.rejected]
    return BatchCreated(task_id=receipt.task_id, accepted=receipt.accepted, rejected=rejected)


@router.get("/tasks", response_model=list[TaskPublic])
def list_tasks(
    request: Request,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    query = select(Task).order_by(col(Task.id).desc()).limit(limit)
    if status is not None:
        query = query.where(Task.status == status)
    with session_scope(_settings(request).database_url) as session:
        return list(session.exec(query))


@router.get("/tasks/{task_id}", response_model=TaskDetail)
def get_task(request: Request, task_id: int) -> Any:
    with session_scope(_settings(request).database_url) as session:
        task = store.get_task(session, task_id)
        attempts = session.exec(select(Attempt).where(Attempt.task_id == task_id)
                                .order_by(col(Attempt.number))).all()
        return TaskDetail(**task.model_dump(), attempts_detail=[a.model_dump() for a in attempts])


_LINE_KINDS = {"output": [LineStatus.SUCCEEDED], "errors": [LineStatus.FAILED, LineStatus.REJECTED]}


@router.get("/tasks/{task_id}/{kind}.jsonl")
def download_lines(request: Request, task_id: int, kind: str) -> StreamingResponse:
    """The batch output file (``output``) or its errors file (``errors``), in input order."""
    settings = _settings(request)
    if kind not in _LINE_KINDS:
        raise HTTPException(404, f"unknown file {kind!r}; use output.jsonl or errors.jsonl")
    with session_scope(settings.database_url) as session:
        store.get_task(session, task_id)

    def lines() -> Iterator[bytes]:
        query = (select(BatchLine.output)
                 .where(BatchLine.task_id == task_id, col(BatchLine.status).in_(_LINE_KINDS[kind]))
                 .order_by(col(BatchLine.line_no)).execution_options(yield_per=1000))
        with session_scope(settings.database_url) as session:
            for output in session.exec(query):
                yield output.encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/status", response_model=Status)
def status(request: Request) -> Status:
    settings = _settings(request)
    with session_scope(settings.database_url) as session:
        counts = dict(session.exec(select(Task.status, func.count()).group_by(Task.status)).all())
        workers = session.exec(select(Worker).order_by(col(Worker.name))).all()
        return Status(
            queue={s.value: counts.get(s, 0) for s in TaskStatus},
            workers=[WorkerPublic.model_validate(w) for w in workers],
            models=sorted(settings.models),
        )


@router.post("/run-now")
def run_now(request: Request) -> dict[str, list[int]]:
    """Dispatch every queued task at once instead of waiting for the scheduler's next pass."""
    return {"dispatched": dispatch_queued(_settings(request), request.app.state.celery)}


# --- repositories and TODO lists ------------------------------------------------------------------


class RepositoryCreate(BaseModel):
    name: str
    source: str  # a local path or a git URL (cloned into the data directory)
    test_command: str | None = None
    setup_command: str | None = None


class TodoCreate(BaseModel):
    repo: str
    model: str
    text: str
    priority: int = 0
    owner: str = "local"
    deadline: datetime | None = None


class TodoCreated(BaseModel):
    task_ids: list[int]
    base: str
    warnings: list[str]


@router.post("/repos", status_code=201, response_model=RepositoryPublic)
def create_repository(request: Request, body: RepositoryCreate) -> Any:
    return register_repository(_settings(request), body.name, body.source,
                               test_command=body.test_command, setup_command=body.setup_command)


@router.get("/repos", response_model=list[RepositoryPublic])
def list_repositories(request: Request) -> Any:
    with session_scope(_settings(request).database_url) as session:
        return list(session.exec(select(Repository).order_by(col(Repository.name))))


@router.post("/todos", status_code=201, response_model=TodoCreated)
def create_todo(request: Request, body: TodoCreate) -> TodoCreated:
    receipt = submit_todo(_settings(request), body.text, repo=body.repo, model=body.model,
                          owner=body.owner, priority=body.priority, deadline_at=body.deadline)
    return TodoCreated(task_ids=list(receipt.task_ids), base=receipt.base, warnings=list(receipt.warnings))
