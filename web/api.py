"""The JSON API. The CLI uses exactly these routes, and the pages do the same things through
the same scheduler functions. Every route needs a token or a logged-in session (web.auth)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlmodel import col, func, select

from scheduler import review, session_scope, store
from scheduler.dispatch import dispatch_queued
from scheduler.night import open_now, window_states
from scheduler.window import parse_duration
from scheduler.errors import SubmissionTooLargeError
from scheduler.models import (
    ApiToken,
    ApiTokenPublic,
    Attempt,
    AttemptPublic,
    NightWindowPublic,
    BatchLine,
    LineStatus,
    Repository,
    RepositoryPublic,
    ReviewState,
    Task,
    TaskPublic,
    TaskStatus,
    Worker,
    WorkerPublic,
)
from scheduler.settings import Settings
from scheduler.submit import (
    register_repository,
    resolve_model,
    submit_batch,
    submit_todo,
)
from web import views
from web.auth import create_api_token, require_api

router = APIRouter(prefix="/api", dependencies=[Depends(require_api)])


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
    windows: list[NightWindowPublic] = []  # open night windows
    always_open: bool = False


class RunNow(BaseModel):
    duration: str | None = None  # e.g. "2h"; default: until the next scheduled close


async def read_limited(upload: UploadFile, limit: int) -> bytes:
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
    data = await read_limited(file, settings.max_batch_bytes)
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
            windows=window_states(settings),
            always_open=settings.always_open,
        )


@router.post("/run-now")
def run_now(request: Request, body: RunNow | None = None) -> dict[str, Any]:
    """Open the night window now (until the next scheduled close, or for ``duration``) and
    dispatch every queued task at once instead of waiting for the scheduler's next pass."""
    settings = _settings(request)
    duration = parse_duration(body.duration) if body and body.duration else None
    window = None if settings.always_open else open_now(settings, duration)
    return {"dispatched": dispatch_queued(settings, request.app.state.celery),
            "window": window.model_dump(mode="json") if window else None}


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


# --- the morning review -----------------------------------------------------------------------


class AcceptBody(BaseModel):
    into: str = Field(description="The branch to merge into; created if it does not exist.")


class NoteBody(BaseModel):
    note: str = ""


class Accepted(BaseModel):
    task_id: int
    branch: str
    into: str
    commit: str


@router.get("/review", response_model=views.ReviewPage)
def review_list(
    request: Request,
    night: date | None = None,
    review: ReviewState | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> views.ReviewPage:
    """Finished tasks, newest first; ``night`` (YYYY-MM-DD) keeps one night, noon to noon."""
    with session_scope(_settings(request).database_url) as session:
        return views.review_page(session, night, review, offset, limit)


@router.post("/tasks/{task_id}/accept", response_model=Accepted)
def accept_task(request: Request, task_id: int, body: AcceptBody) -> Accepted:
    merged = review.accept(_settings(request), task_id, body.into)
    return Accepted(task_id=merged.task_id, branch=merged.branch, into=merged.into, commit=merged.commit)


@router.post("/tasks/{task_id}/reject", response_model=TaskPublic)
def reject_task(request: Request, task_id: int, body: NoteBody) -> Any:
    return review.reject(_settings(request), task_id, body.note)


@router.post("/tasks/{task_id}/requeue", status_code=201)
def requeue_task(request: Request, task_id: int, body: NoteBody) -> dict[str, int]:
    return {"task_id": review.requeue(_settings(request), task_id, body.note)}


@router.get("/tasks/{task_id}/patch.diff")
def download_patch(request: Request, task_id: int) -> FileResponse:
    try:
        path = review.patch_file(_settings(request), task_id)
    except FileNotFoundError as exc:
        raise HTTPException(404, f"task {task_id} kept no patch") from exc
    return FileResponse(path, media_type="text/x-diff", filename=f"task-{task_id}.patch")


@router.get("/files/{relative:path}")
def download_file(request: Request, relative: str) -> FileResponse:
    """A file Nightshift wrote under its data directory's ``artifacts/`` (patches, inputs).
    Anything that resolves elsewhere (``../``, symlinks) is a 404."""
    settings = _settings(request)
    try:
        path = review.inside_data_dir(settings, f"artifacts/{relative}")
        if not path.is_relative_to((settings.data_dir / "artifacts").resolve()):
            raise FileNotFoundError(relative)
    except FileNotFoundError as exc:
        raise HTTPException(404, f"no file {relative!r}") from exc
    return FileResponse(path)


# --- tonight, the estimate and the night report -----------------------------------------------


@router.get("/tonight", response_model=views.Tonight)
def tonight(request: Request) -> views.Tonight:
    settings = _settings(request)
    with session_scope(settings.database_url) as session:
        return views.tonight(session, settings)


@router.get("/estimate", response_model=views.Estimate)
def estimate(
    request: Request,
    model: str,
    kind: Annotated[str, Query(pattern="^(batch|patch)$")] = "patch",
    priority: int = 0,
    tasks: Annotated[int, Query(ge=0, le=100_000)] = 1,
) -> views.Estimate:
    """When work submitted now would be done, before submitting it."""
    settings = _settings(request)
    resolve_model(settings, model)
    with session_scope(settings.database_url) as session:
        return views.estimate(session, kind, model, priority, tasks)


@router.get("/nights/{night}", response_model=views.NightReport)
def night_report(request: Request, night: date) -> views.NightReport:
    with session_scope(_settings(request).database_url) as session:
        return views.night_report(session, night)


# --- API tokens -------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenCreated(ApiTokenPublic):
    token: str = Field(description="Shown once; only its hash is kept.")


@router.get("/tokens", response_model=list[ApiTokenPublic])
def list_tokens(request: Request) -> Any:
    with session_scope(_settings(request).database_url) as session:
        return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))))


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(request: Request, body: TokenCreate) -> TokenCreated:
    row, plain = create_api_token(_settings(request), body.name)
    return TokenCreated(**row.model_dump(), token=plain)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(request: Request, token_id: int) -> None:
    with session_scope(_settings(request).database_url) as session:
        if not store.revoke_api_token(session, token_id):
            raise HTTPException(404, f"no active token with id {token_id}")
