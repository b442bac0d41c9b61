"""The FastAPI application: the pages (``web.pages``, ``web.review_pages``), the JSON API
(``web.api``), static files shipped with the package (htmx, the stylesheet), and the error
handlers that turn submission errors into answers naming the field."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from jobs import InvalidInputError
from scheduler import (
    InvalidSubmissionError,
    Settings,
    SubmissionTooLargeError,
    TaskNotFoundError,
    get_engine,
    make_celery,
)
from web import auth, pages, review_pages
from web.api import router

STATIC = Path(__file__).parent / "static"


def _problem(status: int, field: str, message: str, details: list[str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"detail": {"field": field, "message": message, "details": details or []}})


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Nightshift", version="0.1.0",
                  description="Queue work for the night; collect it in the morning.")
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    get_engine(settings.database_url)
    auth.prepare(settings)
    app.add_middleware(SessionMiddleware, secret_key=auth.session_secret(settings),
                       session_cookie="nightshift_session", max_age=settings.session_max_age_s,
                       same_site="lax", https_only=settings.cookie_secure)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
    app.include_router(pages.public)
    app.include_router(pages.router)
    app.include_router(review_pages.router)

    @app.exception_handler(auth.LoginRequiredError)
    async def _login(_req: Request, exc: auth.LoginRequiredError) -> RedirectResponse:
        return RedirectResponse(f"/login?next={exc.next_path}", 303)

    @app.exception_handler(SubmissionTooLargeError)
    async def _too_large(_req: Request, exc: SubmissionTooLargeError) -> JSONResponse:
        return _problem(413, exc.field, exc.message)

    @app.exception_handler(InvalidSubmissionError)
    async def _invalid(_req: Request, exc: InvalidSubmissionError) -> JSONResponse:
        return _problem(422, exc.field, exc.message, exc.details)

    @app.exception_handler(InvalidInputError)
    async def _invalid_job(_req: Request, exc: InvalidInputError) -> JSONResponse:
        return _problem(422, exc.field, exc.message)

    @app.exception_handler(TaskNotFoundError)
    async def _not_found(_req: Request, exc: TaskNotFoundError) -> JSONResponse:
        return _problem(404, "task_id", str(exc))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
