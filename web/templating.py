"""Jinja2 templates (autoescaped: every user-provided string is escaped) and the filters the
pages share: local times, durations and syntax-highlighted diffs (pygments)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

from web.auth import CSRF_FIELD, CSRF_HEADER, csrf_token

TEMPLATES = Path(__file__).parent / "templates"
_formatter = HtmlFormatter(cssclass="code", nowrap=False)
PYGMENTS_CSS = _formatter.get_style_defs(".code")

templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True))


def local_time(value: datetime | None, fmt: str = "%a %H:%M") -> str:
    return value.astimezone().strftime(fmt) if value else "—"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def highlight_diff(diff: str) -> Markup:
    """Pygments escapes the text it highlights, so its HTML is safe to insert."""
    return Markup(highlight(diff, DiffLexer(), _formatter)) if diff else Markup("")


templates.env.filters.update(local_time=local_time, duration=duration, diff=highlight_diff)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(user=request.session.get("user"), csrf=csrf_token(request), csrf_field=CSRF_FIELD,
                   csrf_header=CSRF_HEADER)
    return templates.TemplateResponse(request, template, context, status_code=status_code)
