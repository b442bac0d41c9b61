"""The morning review: accept a finished TODO item (merge its branch into a branch the user
names), reject it, or requeue it for the next night with a note the model will read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import select

from jobs.errors import RepositoryError
from jobs.patch.repo import inspect_repository, merge_branch
from jobs.patch.state import PATCH_KIND
from scheduler import store
from scheduler.db import session_scope
from scheduler.errors import InvalidSubmissionError
from scheduler.models import (
    Artifact,
    ArtifactKind,
    ReviewState,
    Task,
    TaskCreate,
    TaskStatus,
)
from scheduler.settings import Settings

FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class Merged:
    task_id: int
    branch: str
    into: str
    commit: str


def _finished_patch(settings: Settings, task_id: int) -> Task:
    with session_scope(settings.database_url) as session:
        task = store.get_task(session, task_id)
        session.expunge(task)
    if task.kind != PATCH_KIND:
        raise InvalidSubmissionError("task_id", f"task {task_id} is a {task.kind} task; only TODO items "
                                     "can be merged or requeued (download a batch's output instead)")
    if task.status not in FINISHED:
        raise InvalidSubmissionError("task_id", f"task {task_id} is {task.status.value}; review it once "
                                     "it has finished")
    return task


def accept(settings: Settings, task_id: int, into: str) -> Merged:
    """Merge the item's branch into ``into`` (created if missing) in the user's repository."""
    task = _finished_patch(settings, task_id)
    branch = (task.result or {}).get("branch")
    if not branch:
        raise InvalidSubmissionError("task_id", f"task {task_id} produced no branch (verdict: "
                                     f"{(task.result or {}).get('verdict')}); nothing to merge")
    message = f"Merge {branch}: {task.title}\n\nAccepted in the Nightshift morning review (task {task_id})."
    try:
        commit = merge_branch(Path(task.input["repo_path"]), branch, into.strip(), message)
    except RepositoryError as exc:
        raise InvalidSubmissionError(exc.field, exc.message) from exc
    with session_scope(settings.database_url) as session:
        store.record_review(session, task_id, ReviewState.ACCEPTED, merged_into=into.strip())
    return Merged(task_id, branch, into.strip(), commit)


def reject(settings: Settings, task_id: int, note: str | None = None) -> Task:
    """Mark the item rejected. Its branch stays in the repository for the user to delete."""
    with session_scope(settings.database_url) as session:
        task = store.get_task(session, task_id)
        if task.status not in FINISHED:
            raise InvalidSubmissionError("task_id", f"task {task_id} is {task.status.value}; review it "
                                         "once it has finished")
        return store.record_review(session, task_id, ReviewState.REJECTED, note=note or None)


def requeue(settings: Settings, task_id: int, note: str) -> int:
    """Queue the item again from the repository's current HEAD, with ``note`` added to its text
    so the next night's prompts carry it. Returns the new task's id."""
    note = note.strip()
    if not note:
        raise InvalidSubmissionError("note", "empty; say what the next attempt should do differently")
    task = _finished_patch(settings, task_id)
    try:
        snapshot = inspect_repository(Path(task.input["repo_path"]))
    except RepositoryError as exc:
        raise InvalidSubmissionError("repo", exc.message) from exc
    item = dict(task.input["item"])
    item["body"] = (item.get("body") or "").rstrip() + f"\n\nReviewer note (task {task_id}): {note}"
    new_input = {**task.input, "item": item, "base": snapshot.head,
                 "date": datetime.now().astimezone().date().isoformat()}
    with session_scope(settings.database_url) as session:
        new = store.create_task(session, TaskCreate(
            kind=task.kind, model=task.model, owner=task.owner, priority=task.priority,
            title=task.title, max_attempts=task.max_attempts, input=new_input))
        store.record_review(session, task_id, ReviewState.REQUEUED, note=note, requeued_as=new.id)
        return new.id


def patch_file(settings: Settings, task_id: int) -> Path:
    """The kept patch of a task, resolved inside the data directory (never outside it)."""
    with session_scope(settings.database_url) as session:
        store.get_task(session, task_id)
        artifact = session.exec(select(Artifact).where(Artifact.task_id == task_id,
                                                       Artifact.kind == ArtifactKind.PATCH)).first()
    if artifact is None:
        raise FileNotFoundError(f"task {task_id} kept no patch")
    return inside_data_dir(settings, artifact.path)


def inside_data_dir(settings: Settings, relative: str) -> Path:
    """``relative`` resolved under the data directory; FileNotFoundError if it leaves it or is
    missing, so a crafted path (``../``, a symlink) is a 404, never a read elsewhere."""
    root = settings.data_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise FileNotFoundError(relative)
    return path
