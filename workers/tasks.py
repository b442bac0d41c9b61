"""Celery task bodies. Each receives a task id only and reads the rest from the database.

Both kinds share one frame (``_run_claimed``): claim the task, load the engine, run the
job, record success or failure on the row. Only the middle differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from jobs import BATCH_KIND, BatchRequest, Engine, EngineError, InvalidInputError, OutputLine, run_batch
from jobs.errors import SandboxUnavailableError
from jobs.patch.loop import PatchLoop
from jobs.patch.sandbox import BubblewrapSandbox, Sandbox, SandboxLimits
from jobs.patch.state import PatchItem, PatchLimits, PatchState
from scheduler import Settings, session_scope, store
from scheduler.models import ArtifactKind, Task, TaskStatus, WorkerEventKind, WorkerState, utcnow
from workers.energy import EnergyMeter
from workers.engine import EngineHolder
from workers.guard import Guard, Released, run_guarded
from workers.presence import Presence
from workers.weights import ResidentServer

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What task bodies share within one worker process: made once at start."""

    settings: Settings
    holder: EngineHolder
    presence: Presence
    sandbox_factory: Callable[[], Sandbox] = field(default=BubblewrapSandbox)
    guard: Guard | None = None  # night window and owner presence; None: always run
    energy: EnergyMeter = field(default_factory=EnergyMeter)
    weights: ResidentServer | None = None  # serves the resident model to peers; None: does not


@dataclass(frozen=True)
class Outcome:
    tokens_in: int
    tokens_out: int
    result: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


JobBody = Callable[[WorkerContext, Task, Engine], Outcome]


def _run_claimed(ctx: WorkerContext, task_id: int, body: JobBody) -> dict[str, Any]:
    settings = ctx.settings
    if ctx.guard is not None and not ctx.guard.window_open():  # sent just before a window closed
        with session_scope(settings.database_url) as session:
            store.mark_undispatched(session, task_id, "the worker's night window was closed")
        return {"task_id": task_id, "skipped": True}
    with session_scope(settings.database_url) as session:
        attempt = store.claim_task(session, task_id, ctx.presence.name)
        task = store.get_task(session, task_id) if attempt else None
    if attempt is None:  # redelivered after another worker took or finished it
        log.info("task %s is not claimable (finished or taken); skipping", task_id)
        return {"task_id": task_id, "skipped": True}
    ctx.presence.set(state=WorkerState.LOADING, current_task_id=task_id)
    energy = ctx.energy.start()
    try:
        outcome = _run_body(ctx, task, body)
        if isinstance(outcome, Released):
            with session_scope(settings.database_url) as session:
                store.release_task(session, task_id, attempt.id, outcome.reason)
            return {"task_id": task_id, "released": outcome.reason}
        with session_scope(settings.database_url) as session:
            store.finish_task(session, task_id, attempt.id, outcome.tokens_in, outcome.tokens_out,
                              result=outcome.result)
        return {"task_id": task_id, **outcome.summary}
    except InvalidInputError as exc:
        status = _record_failure(settings, task_id, attempt.id, str(exc), retry=False)
    except Exception as exc:  # top of the task body: anything else is recorded and retried
        log.exception("task %s failed", task_id)
        if isinstance(exc, EngineError):
            ctx.holder.release()  # a failed engine is not reused
        status = _record_failure(settings, task_id, attempt.id, f"{type(exc).__name__}: {exc}", retry=True)
    finally:
        _record_energy(settings, attempt.id, energy.stop())
        ctx.presence.set(state=WorkerState.IDLE, current_task_id=None, state_reason=None,
                         resident_model=ctx.holder.resident_model)
    return {"task_id": task_id, "status": status}


def _run_body(ctx: WorkerContext, task: Task, body: JobBody) -> Outcome | Released:
    if ctx.guard is None:
        engine = ctx.holder.engine_for(task.model)
        ctx.presence.set(state=WorkerState.WORKING, resident_model=task.model)
        return body(ctx, task, engine)

    def one_round(engine: Engine) -> Outcome:
        with session_scope(ctx.settings.database_url) as session:  # its checkpoint may have moved
            fresh = store.get_task(session, task.id)
        return body(ctx, fresh, engine)

    suspended: list = []  # (since, reason) while the GPU is given back

    def show(state: WorkerState, reason: str | None) -> None:
        ctx.presence.set(state=state, state_reason=reason, resident_model=ctx.holder.resident_model)
        if state is WorkerState.SUSPENDED and not suspended:
            suspended.append((utcnow(), reason or ""))
        elif state is WorkerState.WORKING and suspended:
            _record_event(ctx, WorkerEventKind.SUSPEND, *suspended.pop(), task.id, task.model)

    try:
        return run_guarded(ctx.guard, lambda: ctx.holder.engine_for(task.model), one_round,
                           raise_mid_call=task.kind != BATCH_KIND, show=show, free_gpu=ctx.holder.sleep,
                           merge=_merge)
    finally:
        if suspended:  # gave the task back while suspended
            _record_event(ctx, WorkerEventKind.SUSPEND, *suspended.pop(), task.id, task.model)


def _record_event(ctx: WorkerContext, kind: WorkerEventKind, started_at: datetime, detail: str,
                  task_id: int | None, model: str | None) -> None:
    with session_scope(ctx.settings.database_url) as session:
        store.record_worker_event(session, ctx.presence.name, kind, started_at, utcnow(),
                                  task_id=task_id, model=model, detail=detail)


def record_swaps(ctx: WorkerContext) -> None:
    """Write every model load of this worker as a swap event (the night report's swap time)."""
    def on_swap(previous: str | None, model: str, started_at: datetime, _ended_at: datetime) -> None:
        task_id = ctx.presence.current_task_id
        _record_event(ctx, WorkerEventKind.SWAP, started_at, f"{previous or 'nothing'} -> {model}",
                      task_id, model)
        if ctx.weights is not None:  # the new resident model is what peers can pull from us now
            ctx.weights.serve(model)

    ctx.holder.on_swap = on_swap


def _merge(first: Outcome, then: Outcome) -> Outcome:
    """A batch run in several rounds (suspended between them): tokens and counts add up."""
    summary = {k: first.summary.get(k, 0) + v if isinstance(v, int) else v for k, v in then.summary.items()}
    return Outcome(first.tokens_in + then.tokens_in, first.tokens_out + then.tokens_out,
                   then.result, summary)


def _record_energy(settings: Settings, attempt_id: int, measured: tuple[float | None, str]) -> None:
    with session_scope(settings.database_url) as session:
        store.record_attempt_energy(session, attempt_id, *measured)


def _record_failure(settings: Settings, task_id: int, attempt_id: int, error: str, *, retry: bool) -> TaskStatus:
    with session_scope(settings.database_url) as session:
        return store.fail_task(session, task_id, attempt_id, error, retry=retry)


# --- batches --------------------------------------------------------------------------------------


def _save_lines(settings: Settings, task_id: int, lines: list[OutputLine]) -> None:
    with session_scope(settings.database_url) as session:
        store.record_lines(session, task_id, lines)


def _batch_body(ctx: WorkerContext, task: Task, engine: Engine) -> Outcome:
    with session_scope(ctx.settings.database_url) as session:
        requests = [BatchRequest(line.line_no, line.custom_id, **json.loads(line.request))
                    for line in store.pending_lines(session, task.id)]
    log.info("task %s: %d pending requests for %s", task.id, len(requests), task.model)
    summary = run_batch(engine, requests, batch_id=f"task-{task.id}", model=task.model,
                        save=partial(_save_lines, ctx.settings, task.id), flush_s=ctx.settings.result_flush_s)
    return Outcome(summary.prompt_tokens, summary.completion_tokens,
                   summary={"succeeded": summary.succeeded, "failed": summary.failed})


def run_batch_task(ctx: WorkerContext, task_id: int) -> dict[str, Any]:
    return _run_claimed(ctx, task_id, _batch_body)


# --- patches --------------------------------------------------------------------------------------


def _patch_item(inp: dict[str, Any]) -> tuple[PatchItem, PatchLimits]:
    item = inp["item"]
    lim = inp["limits"]
    limits = PatchLimits(rounds=lim["rounds"], candidates=lim["candidates"], wall_time_s=lim["wall_time_s"],
                         max_tokens=lim["max_tokens"], tests=SandboxLimits(wall_time_s=lim["test_time_s"]))
    return PatchItem(repo=Path(inp["repo_path"]), base=inp["base"], title=item["title"], body=item["body"],
                     slug=item["slug"], test_command=inp["test_command"], setup_command=inp["setup_command"],
                     date=inp["date"]), limits


def _save_checkpoint(settings: Settings, task_id: int, state: PatchState) -> None:
    with session_scope(settings.database_url) as session:
        store.save_checkpoint(session, task_id, state.model_dump(mode="json"))


def _keep_patch(settings: Settings, task_id: int, diff: str) -> None:
    relative = f"artifacts/{task_id}/patch.diff"
    path = settings.data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(diff)
    data = diff.encode()
    with session_scope(settings.database_url) as session:
        store.add_artifact(session, task_id, ArtifactKind.PATCH, relative, len(data), hashlib.sha256(data).hexdigest())


def _patch_body(ctx: WorkerContext, task: Task, engine: Engine) -> Outcome:
    item, limits = _patch_item(task.input)
    try:
        sandbox = ctx.sandbox_factory()
    except SandboxUnavailableError as exc:
        state = PatchState(step="done", verdict="infrastructure error", reason=str(exc))
    else:
        state = PatchState.model_validate(task.checkpoint) if task.checkpoint else None
        loop = PatchLoop(engine, sandbox, item, workspace=ctx.settings.data_dir / "worktrees" / f"task-{task.id}",
                         limits=limits, state=state, save=partial(_save_checkpoint, ctx.settings, task.id))
        state = loop.run()
    if state.chosen is not None and state.verdict in ("fixed", "partial"):
        _keep_patch(ctx.settings, task.id, state.candidates[state.chosen].diff)
    result = state.model_dump(mode="json", exclude={"step"})
    return Outcome(state.tokens_in, state.tokens_out, result=result,
                   summary={"verdict": state.verdict, "branch": state.branch})


def run_patch_task(ctx: WorkerContext, task_id: int) -> dict[str, Any]:
    return _run_claimed(ctx, task_id, _patch_body)
