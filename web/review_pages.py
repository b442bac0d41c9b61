"""The morning: the review list, one item's page with its actions, and the night report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from scheduler import InvalidSubmissionError, TaskNotFoundError, review, session_scope, store
from scheduler.models import Attempt, ReviewState, Task
from scheduler.settings import Settings
from web import views
from web.auth import require_page
from web.templating import PYGMENTS_CSS, duration, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_page)])
PAGE_SIZE = 50
CHART_WIDTH = 900


def _settings(request: Request) -> Settings:
    return request.app.state.settings


@router.get("/review")
def review_list(request: Request, night: str = "", state: ReviewState | None = None, page: int = 1) -> Response:
    settings = _settings(request)
    page = max(page, 1)
    try:
        chosen = date.fromisoformat(night) if night.strip() else None
    except ValueError:
        return render(request, "not_found.html", status_code=422, what=f"night {night!r} (write YYYY-MM-DD)")
    with session_scope(settings.database_url) as session:
        night = chosen or views.latest_night(session)
        data = views.review_page(session, night, state, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    pages = max(1, -(-data.total // PAGE_SIZE))
    return render(request, "review.html", data=data, state=state, page=page, pages=pages)


def _item(settings: Settings, task_id: int) -> dict[str, Any]:
    with session_scope(settings.database_url) as session:
        task = store.get_task(session, task_id)
        attempts = session.exec(select(Attempt).where(Attempt.task_id == task_id)
                                .order_by(col(Attempt.number))).all()
        return {"task": task.model_dump(), "attempts": [a.model_dump() for a in attempts]}


def _render_item(request: Request, task_id: int, status_code: int = 200, **extra: Any) -> Response:
    try:
        item = _item(_settings(request), task_id)
    except TaskNotFoundError:
        return render(request, "not_found.html", status_code=404, what=f"task {task_id}")
    result = item["task"]["result"] or {}
    candidates = result.get("candidates") or []
    chosen = result.get("chosen")
    runners_up = [c for c in candidates if c.get("applied") and c.get("index") != chosen][:5]
    return render(request, "item.html", status_code=status_code, **item, result=result,
                  chosen=candidates[chosen] if chosen is not None and chosen < len(candidates) else None,
                  runners_up=runners_up, pygments_css=PYGMENTS_CSS, **extra)


@router.get("/review/{task_id}")
def review_item(request: Request, task_id: int, done: str = "") -> Response:
    return _render_item(request, task_id, done=done)


def _act(request: Request, task_id: int, form: dict[str, str], action: Callable[[], str]) -> Response:
    """Run a review action; on bad input show the item again with the error next to the field
    and the user's text kept, else come back to the item saying what was done."""
    try:
        done = action()
    except InvalidSubmissionError as exc:
        field = exc.field if exc.field in form else next(iter(form))
        return _render_item(request, task_id, 422, errors={field: exc.message}, **form)
    return RedirectResponse(f"/review/{task_id}?done={quote(done)}", 303)


@router.post("/review/{task_id}/accept")
def accept(request: Request, task_id: int, into: Annotated[str, Form()] = "") -> Response:
    def merge() -> str:
        merged = review.accept(_settings(request), task_id, into)
        return f"merged into {merged.into} at {merged.commit[:10]}"

    return _act(request, task_id, {"into": into}, merge)


@router.post("/review/{task_id}/reject")
def reject(request: Request, task_id: int, note: Annotated[str, Form()] = "") -> Response:
    def mark() -> str:
        review.reject(_settings(request), task_id, note)
        return "rejected"

    return _act(request, task_id, {"note": note}, mark)


@router.post("/review/{task_id}/requeue")
def requeue(request: Request, task_id: int, note: Annotated[str, Form()] = "") -> Response:
    return _act(request, task_id, {"note": note},
                lambda: f"requeued as task {review.requeue(_settings(request), task_id, note)}")


# --- the night report ---------------------------------------------------------------------------


@router.get("/nights")
def latest_report(request: Request) -> Response:
    with session_scope(_settings(request).database_url) as session:
        night = views.latest_night(session)
    return RedirectResponse(f"/nights/{night.isoformat()}" if night else "/nights/none", 303)


@router.get("/nights/none")
def no_report(request: Request) -> Response:
    return render(request, "report.html", report=None, chart=None)


COLOURS = {"succeeded": "#3d9a62", "failed": "#c4453c", "lost": "#c4453c", "running": "#2f5dd0",
           "yielded": "#b98a1e"}
EVENT_COLOURS = {"swap": "#7b5cc4", "suspend": "#e0b43a"}


def _chart(report: views.NightReport, titles: dict[int, str]) -> dict[str, Any]:
    """Geometry of the timeline, drawn as SVG by the template: a row per worker, a bar per
    attempt coloured by how it ended, and thin bars under it for swaps and suspensions."""
    span = max((b.end_s for b in report.bars), default=0) or 1
    rows = {w: i for i, w in enumerate(report.workers)}
    bars = [_bar(b, rows[b.worker], span, titles) for b in report.bars]
    ticks = [{"x": 120 + i / 4 * CHART_WIDTH, "label": duration(span * i / 4)} for i in range(5)]
    return {"bars": bars, "rows": rows, "height": 40 + len(rows) * 28, "width": CHART_WIDTH + 140,
            "ticks": ticks}


def _bar(b: views.Bar, row: int, span: float, titles: dict[int, str]) -> dict[str, Any]:
    took = duration(b.end_s - b.start_s)
    if b.kind == "attempt":
        height, y, fill = 20, 20 + row * 28, COLOURS.get(b.status, "#8a93a6")
        title = f"task {b.task_id} {titles.get(b.task_id, '')}: {b.status}, {took}, {b.tokens_out} tokens"
    else:
        height, y, fill = 6, 34 + row * 28, EVENT_COLOURS.get(b.kind, "#8a93a6")
        title = f"{b.kind} {took}: {b.status}" + (f" (task {b.task_id})" if b.task_id else "")
    return {"x": f"{120 + b.start_s / span * CHART_WIDTH:.1f}", "y": y, "h": height, "kind": b.kind,
            "w": f"{max((b.end_s - b.start_s) / span * CHART_WIDTH, 1.5):.1f}", "fill": fill, "title": title}


@router.get("/nights/{night}")
def report(request: Request, night: date) -> Response:
    with session_scope(_settings(request).database_url) as session:
        data = views.night_report(session, night)
        tasks = dict(session.exec(select(Task.id, Task.title).where(
            col(Task.id).in_({b.task_id for b in data.bars if b.task_id}))).all())
    return render(request, "report.html", report=data, chart=_chart(data, tasks))
