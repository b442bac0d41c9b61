"""The FastAPI application: the JSON API now, the pages with issue 4."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from jobs import InvalidInputError
from scheduler import (
    InvalidSubmissionError,
    Settings,
    SubmissionTooLargeError,
    TaskNotFoundError,
    get_engine,
    make_celery,
)
from web.api import router


def _problem(status: int, field: str, message: str, details: list[str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"detail": {"field": field, "message": message, "details": details or []}})


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Nightshift", version="0.1.0",
                  description="Queue work for the night; collect it in the morning.")
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    get_engine(settings.database_url)
    app.include_router(router)

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
