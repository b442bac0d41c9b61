"""The pages people use: log in, the evening form, tonight's live view and API tokens.
The morning review and the night report are in ``web.review_pages``.

Pages call the same scheduler functions as the JSON API. Every form carries the session's
CSRF token; a failed submission renders the form again with each error next to its field and
the user's text kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from jobs import InvalidInputError
from jobs.patch.todo import parse_todo
from scheduler import InvalidSubmissionError, session_scope, store
from scheduler.models import ApiToken, Repository
from scheduler.settings import Settings
from scheduler.submit import register_repository, submit_batch, submit_todo
from web import auth, views
from web.api import read_limited
from web.auth import require_page
from web.templating import render

public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False, dependencies=[Depends(require_page)])

# Which form field shows an error raised for a submission field.
_FIELD_OF = {"deadline": "ready_by", "todo": "text", "path": "source", "lines": "file"}


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _safe_next(path: str) -> str:
    """Only a path on this site: never an open redirect to another host."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


# --- login and first start ------------------------------------------------------------------------


@public.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if not auth.has_user(_settings(request)):
        return RedirectResponse("/setup", 303)
    return render(request, "login.html", next=_safe_next(next))


@public.post("/login")
async def login(request: Request, username: Annotated[str, Form()] = "",
                password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    await auth.check_csrf(request)
    user = auth.verify_login(_settings(request), username, password)
    if user is None:
        return render(request, "login.html", status_code=401, next=_safe_next(next), username=username,
                      error="wrong user name or password")
    auth.log_in(request, user)
    return RedirectResponse(_safe_next(next), 303)


@public.post("/logout")
async def logout(request: Request) -> Response:
    await auth.check_csrf(request)
    auth.log_out(request)
    return RedirectResponse("/login", 303)


@public.get("/setup")
def setup_form(request: Request, code: str = "") -> Response:
    if auth.has_user(_settings(request)):
        return RedirectResponse("/login", 303)
    return render(request, "setup.html", code=code, username="admin", errors={})


@public.post("/setup")
async def setup(request: Request, code: Annotated[str, Form()] = "", username: Annotated[str, Form()] = "",
                password: Annotated[str, Form()] = "", confirm: Annotated[str, Form()] = "") -> Response:
    await auth.check_csrf(request)
    settings = _settings(request)
    if auth.has_user(settings):
        return RedirectResponse("/login", 303)
    errors = {}
    if not auth.setup_code_matches(settings, code):
        errors["code"] = "wrong setup code; it is printed by 'nightshift run' and kept in data_dir/setup-code"
    if not username.strip():
        errors["username"] = "give a user name"
    if problem := auth.check_password_rules(password, confirm):
        errors["password"] = problem
    if errors:
        return render(request, "setup.html", status_code=422, code=code, username=username, errors=errors)
    auth.set_password(settings, username.strip(), password)
    auth.log_in(request, auth.verify_login(settings, username.strip(), password))
    return RedirectResponse("/", 303)


# --- the evening ----------------------------------------------------------------------------------


def _evening(request: Request, status_code: int = 200, **forms: Any) -> Response:
    settings = _settings(request)
    with session_scope(settings.database_url) as session:
        repos = [r.model_dump() for r in session.exec(select(Repository).order_by(col(Repository.name)))]
        tonight = views.tonight(session, settings, next_limit=5)
    names = {f"todo-{r['name']}" for r in repos}
    orphans = [msg for key, form in forms.items() if key.startswith("todo-") and key not in names
               for msg in form["errors"].values()]  # e.g. a repository removed since the page loaded
    return render(request, "evening.html", status_code=status_code, repos=repos, models=sorted(settings.models),
                  tonight=tonight, forms=forms, orphans=orphans)


def _failed(form: str, values: dict[str, Any], exc: InvalidSubmissionError | InvalidInputError) -> dict:
    field = _FIELD_OF.get(exc.field, exc.field)
    details = getattr(exc, "details", [])
    return {form: {"values": values, "errors": {field: exc.message}, "details": details}}


def _ready_by(value: str) -> datetime | None:
    """The form's local date-time ("2026-11-23T07:00"), in this server's time zone."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError as exc:
        raise InvalidSubmissionError("deadline", f"{value!r} is not a date and time; use the picker "
                                     "or write YYYY-MM-DDTHH:MM") from exc


@router.get("/")
def evening(request: Request) -> Response:
    return _evening(request)


@router.post("/evening/repos")
def add_repository(request: Request, name: Annotated[str, Form()] = "", source: Annotated[str, Form()] = "",
                   test_command: Annotated[str, Form()] = "") -> Response:
    values = {"name": name, "source": source, "test_command": test_command}
    try:
        register_repository(_settings(request), name.strip(), source.strip(),
                            test_command=test_command.strip() or None)
    except InvalidSubmissionError as exc:
        return _evening(request, 422, **_failed("repo", values, exc))
    return RedirectResponse(f"/?added={quote(name.strip())}#repo-{quote(name.strip())}", 303)


@router.post("/evening/todos")
def add_todos(request: Request, repo: Annotated[str, Form()] = "", text: Annotated[str, Form()] = "",
              model: Annotated[str, Form()] = "", priority: Annotated[int, Form()] = 0,
              ready_by: Annotated[str, Form()] = "") -> Response:
    values = {"repo": repo, "text": text, "model": model, "priority": priority, "ready_by": ready_by}
    try:
        receipt = submit_todo(_settings(request), text, repo=repo, model=model, priority=priority,
                              deadline_at=_ready_by(ready_by))
    except InvalidSubmissionError as exc:
        return _evening(request, 422, **_failed(f"todo-{repo}", values, exc))
    ids = ",".join(map(str, receipt.task_ids))
    return RedirectResponse(f"/tonight?queued={ids}", 303)


@router.post("/evening/batches")
async def add_batch(request: Request, file: Annotated[UploadFile | None, File()] = None,
                    model: Annotated[str, Form()] = "", priority: Annotated[int, Form()] = 0,
                    ready_by: Annotated[str, Form()] = "") -> Response:
    settings = _settings(request)
    values = {"model": model, "priority": priority, "ready_by": ready_by}
    try:
        if file is None or not file.filename:
            raise InvalidSubmissionError("file", "no file chosen; pick a .jsonl file in the OpenAI Batch format")
        data = await read_limited(file, settings.max_batch_bytes)
        receipt = submit_batch(settings, data, model=model, priority=priority, deadline_at=_ready_by(ready_by),
                               title=file.filename)
    except InvalidSubmissionError as exc:
        return _evening(request, 413 if exc.field == "file" and "limit" in exc.message else 422,
                        **_failed("batch", values, exc))
    note = f"&rejected={len(receipt.rejected)}" if receipt.rejected else ""
    return RedirectResponse(f"/tonight?queued={receipt.task_id}{note}", 303)


@router.post("/evening/preview")
async def preview(request: Request) -> Response:
    """How tonight looks for the form being filled in (htmx swaps this into the form)."""
    form = await request.form()
    settings = _settings(request)
    kind = "batch" if form.get("kind") == "batch" else "patch"
    model = str(form.get("model") or "")
    try:
        priority = int(form.get("priority") or 0)
    except ValueError:
        priority = 0
    items = 1
    if kind == "patch":
        try:
            items = len(parse_todo(str(form.get("text") or "")))
        except InvalidInputError:
            items = 0
    with session_scope(settings.database_url) as session:
        est = views.estimate(session, kind, model, priority, items) if model in settings.models else None
    return render(request, "_preview.html", estimate=est, items=items, kind=kind,
                  window=views.window_state(settings))


# --- tonight --------------------------------------------------------------------------------------


@router.get("/tonight")
def tonight_page(request: Request, queued: str = "", rejected: int = 0) -> Response:
    settings = _settings(request)
    with session_scope(settings.database_url) as session:
        data = views.tonight(session, settings)
    return render(request, "tonight.html", tonight=data, queued=queued, rejected=rejected)


@router.get("/tonight/live")
def tonight_live(request: Request) -> Response:
    settings = _settings(request)
    with session_scope(settings.database_url) as session:
        data = views.tonight(session, settings)
    return render(request, "_tonight_live.html", tonight=data)


# --- API tokens -----------------------------------------------------------------------------------


def _tokens(settings: Settings) -> list[dict[str, Any]]:
    with session_scope(settings.database_url) as session:
        return [t.model_dump() for t in session.exec(select(ApiToken).order_by(col(ApiToken.id)))]


@router.get("/tokens")
def tokens_page(request: Request) -> Response:
    return render(request, "tokens.html", tokens=_tokens(_settings(request)), created=None)


@router.post("/tokens")
def create_token(request: Request, name: Annotated[str, Form()] = "") -> Response:
    settings = _settings(request)
    error, created = None, None
    try:
        created = auth.create_api_token(settings, name)[1]
    except ValueError as exc:
        error = str(exc)
    return render(request, "tokens.html", status_code=422 if error else 201, tokens=_tokens(settings),
                  created=created, error=error, name=name)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int) -> Response:
    with session_scope(_settings(request).database_url) as session:
        store.revoke_api_token(session, token_id)
    return RedirectResponse("/tokens", 303)

