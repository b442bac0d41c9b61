"""Turning a user's submission into a queued task: validate at the edge, store, queue.

The web API and the CLI (through the API) both end up here, so the rules are the same
everywhere.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import select

from jobs import BATCH_KIND, BatchFileError, InvalidInputError, LineError, error_line, parse_batch
from jobs.errors import RepositoryError
from jobs.patch.repo import inspect_repository
from jobs.patch.state import PATCH_KIND
from jobs.patch.testrun import detect_test_command
from jobs.patch.todo import parse_todo
from scheduler import planning, store
from scheduler.db import session_scope
from scheduler.errors import InvalidSubmissionError, SubmissionTooLargeError, UnknownModelError
from scheduler.models import ArtifactKind, Repository, RepositoryBase, TaskCreate, utcnow
from scheduler.settings import ModelSpec, Settings


@dataclass(frozen=True)
class BatchReceipt:
    task_id: int
    accepted: int
    rejected: tuple[LineError, ...]


def resolve_model(settings: Settings, alias: str) -> ModelSpec:
    """The model's catalog entry; refused when unknown, or larger than every worker's memory."""
    spec = settings.models.get(alias)
    if spec is None:
        raise UnknownModelError(alias, list(settings.models))
    with session_scope(settings.database_url) as session:
        memories = [m for w in planning.live_workers(session) if (m := planning.worker_memory_gib(w))]
    needed = planning.plan_model(alias, spec).vram_gib
    if memories and needed > max(memories):
        raise InvalidSubmissionError("model", f"{alias!r} needs {needed:.1f} GiB of GPU memory; the "
                                     f"largest connected worker has {max(memories):.1f} GiB. Choose a "
                                     "smaller model, or connect a worker with more memory")
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


# --- repositories and TODO lists ------------------------------------------------------------


def _looks_like_url(source: str) -> bool:
    return "://" in source or (":" in source and "@" in source.split(":", 1)[0])


def _clone(settings: Settings, name: str, url: str) -> Path:
    target = settings.data_dir / "repos" / name
    if target.exists():
        raise InvalidSubmissionError("name", f"{target} already exists; choose another name")
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["git", "clone", "--quiet", url, str(target)], capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise InvalidSubmissionError("source", f"git clone {url} failed: {proc.stderr.strip()[-400:]}")
    return target


def register_repository(settings: Settings, name: str, source: str, *, test_command: str | None = None,
                        setup_command: str | None = None) -> Repository:
    """Register a local repository, or clone a git URL into the data directory."""
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise InvalidSubmissionError("name", f"{name!r} is not allowed; use letters, digits, '-', '_' and '.'")
    with session_scope(settings.database_url) as session:
        if store.find_repository(session, name) is not None:
            raise InvalidSubmissionError("name", f"a repository named {name!r} is already registered")
    origin = source if _looks_like_url(source) else None
    path = _clone(settings, name, source) if origin else Path(source).expanduser().resolve()
    try:
        snapshot = inspect_repository(path)
    except RepositoryError as exc:
        raise InvalidSubmissionError(exc.field, exc.message) from exc
    command = test_command or detect_test_command(snapshot.root)
    if not command:
        raise InvalidSubmissionError("test_command", f"no test command found in {snapshot.root} "
                                     "(looked for pytest, npm test, cargo test, go test, make test); "
                                     "give one, e.g. --test-command 'python -m pytest -q'")
    data = RepositoryBase(name=name, path=str(snapshot.root), origin_url=origin,
                          test_command=command, setup_command=setup_command)
    with session_scope(settings.database_url) as session:
        return store.add_repository(session, data)


@dataclass(frozen=True)
class TodoReceipt:
    task_ids: tuple[int, ...]
    base: str
    warnings: tuple[str, ...]


def submit_todo(settings: Settings, text: str, *, repo: str, model: str, owner: str = "local",
                priority: int = 0, deadline_at: datetime | None = None) -> TodoReceipt:
    """Queue one patch task per TODO item, all starting from the repository's current HEAD.
    Uncommitted changes are left alone and are not part of the snapshot."""
    resolve_model(settings, model)
    check_deadline(deadline_at)
    try:
        items = parse_todo(text)
    except InvalidInputError as exc:
        raise InvalidSubmissionError(exc.field, exc.message) from exc
    with session_scope(settings.database_url) as session:
        repository = store.find_repository(session, repo)
        if repository is None:
            known = ", ".join(r.name for r in session.exec(select(Repository))) or "none yet"
            raise InvalidSubmissionError("repo", f"unknown repository {repo!r} (registered: {known}); "
                                         "add it with: nightshift repo add NAME PATH")
    try:
        snapshot = inspect_repository(Path(repository.path))
    except RepositoryError as exc:
        raise InvalidSubmissionError("repo", f"{repo}: {exc.message}") from exc
    warnings = (f"{snapshot.root} has uncommitted changes; they are left alone and tonight's work "
                f"starts from the last commit {snapshot.head[:10]}",) if snapshot.dirty else ()
    limits = {"rounds": settings.patch_rounds, "candidates": settings.patch_candidates,
              "wall_time_s": settings.patch_wall_time_s, "test_time_s": settings.patch_test_time_s,
              "max_tokens": settings.patch_max_tokens}
    ids = []
    with session_scope(settings.database_url) as session:
        for item in items:
            task = store.create_task(session, TaskCreate(
                kind=PATCH_KIND, model=model, owner=owner, priority=priority, deadline_at=deadline_at,
                title=item.title[:200], max_attempts=settings.max_attempts,
                input={"repository": repository.name, "repo_path": repository.path, "base": snapshot.head,
                       "test_command": repository.test_command, "setup_command": repository.setup_command,
                       "item": {"line_no": item.line_no, "title": item.title, "body": item.body,
                                "slug": item.slug},
                       "date": datetime.now().astimezone().date().isoformat(), "limits": limits}))
            ids.append(task.id)
    return TodoReceipt(tuple(ids), snapshot.head, warnings)
