"""Who may use the pages and the API.

- One login for the pages: a password set on first start (``/setup`` with the setup code the
  web process prints and writes to ``data_dir/setup-code``), kept as an Argon2id hash.
- A signed session cookie (HttpOnly, SameSite=Lax, Secure when ``cookie_secure``) carries the
  user id and a CSRF token; every unsafe request made with the cookie must echo that token
  (form field ``csrf_token`` or header ``X-CSRF-Token``), or it gets 403.
- Bearer API tokens for the CLI and scripts; only their SHA-256 is stored. The web process
  writes one for the local CLI to ``data_dir/api-token`` (mode 0600) on start.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlmodel import col, select

from scheduler import Settings, session_scope, store
from scheduler.models import ApiToken, User

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOCAL_TOKEN_NAME = "local CLI"
MIN_PASSWORD_LEN = 10

_hasher = PasswordHasher()


class LoginRequiredError(Exception):
    """A page was asked for without a session; the app answers with a redirect to log in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class Principal:
    """Who made a request: the logged-in user (by cookie) or an API token."""

    name: str
    via: str  # "session" | "token"


# --- secrets on disk ------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _read_or_create(path: Path, make) -> str:
    if path.is_file():
        return path.read_text().strip()
    value = make()
    _write_private(path, value)
    return value


def session_secret(settings: Settings) -> str:
    return _read_or_create(settings.data_dir / "session-secret", lambda: secrets.token_urlsafe(48))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(settings: Settings, name: str) -> tuple[ApiToken, str]:
    """A new token; the plain value is returned once and never stored."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError(f"token name {name!r}: give 1 to 100 characters")
    plain = "ns_" + secrets.token_urlsafe(32)
    with session_scope(settings.database_url) as session:
        row = store.add_api_token(session, name, plain[:10], token_digest(plain))
        session.expunge(row)
    return row, plain


def prepare(settings: Settings) -> None:
    """At web start: make sure the local CLI has a valid token, and print the setup link while
    no password is set."""
    path = settings.data_dir / "api-token"
    current = path.read_text().strip() if path.is_file() else ""
    if not current or token_principal(settings, current) is None:
        _, plain = create_api_token(settings, LOCAL_TOKEN_NAME)
        _write_private(path, plain)
    if not has_user(settings):
        code = _read_or_create(settings.data_dir / "setup-code", lambda: secrets.token_urlsafe(16))
        log.warning("No password is set yet. Open %s/setup?code=%s to choose one.", settings.api_url, code)


# --- passwords ----------------------------------------------------------------------------------


def has_user(settings: Settings) -> bool:
    with session_scope(settings.database_url) as session:
        return session.exec(select(User.id).limit(1)).first() is not None


def check_password_rules(password: str, confirm: str | None = None) -> str | None:
    """The problem with a new password, or None."""
    if len(password) < MIN_PASSWORD_LEN:
        return f"too short ({len(password)} characters); use at least {MIN_PASSWORD_LEN}"
    if confirm is not None and password != confirm:
        return "the two passwords differ"
    return None


def set_password(settings: Settings, username: str, password: str) -> None:
    problem = check_password_rules(password)
    if problem:
        raise ValueError(f"password: {problem}")
    with session_scope(settings.database_url) as session:
        store.save_user(session, username, _hasher.hash(password))
    (settings.data_dir / "setup-code").unlink(missing_ok=True)


def setup_code_matches(settings: Settings, code: str) -> bool:
    path = settings.data_dir / "setup-code"
    return path.is_file() and hmac.compare_digest(path.read_text().strip(), code.strip())


def verify_login(settings: Settings, username: str, password: str) -> User | None:
    with session_scope(settings.database_url) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is None:
            _hasher.hash(password)  # the same work as a real check: no user enumeration by timing
            return None
        try:
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            store.save_user(session, username, _hasher.hash(password))
        session.expunge(user)
        return user


# --- sessions and CSRF ----------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use (the login form needs one too)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def log_in(request: Request, user: User) -> None:
    request.session.clear()  # a fresh session: nothing from before the login survives
    request.session.update({"user": user.username, "csrf": secrets.token_urlsafe(32)})


def log_out(request: Request) -> None:
    request.session.clear()


async def check_csrf(request: Request) -> None:
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get(CSRF_FIELD)
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page and try again")


def token_principal(settings: Settings, token: str) -> Principal | None:
    with session_scope(settings.database_url) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == token_digest(token),
                                                  col(ApiToken.revoked_at).is_(None))).first()
        if row is None:
            return None
        store.touch_api_token(session, row.id)
        return Principal(row.name, "token")


def principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return token_principal(request.app.state.settings, header[7:].strip())
    user = request.session.get("user")
    return Principal(user, "session") if user else None


async def require_api(request: Request) -> Principal:
    """For /api: a token or a session (with its CSRF token on unsafe methods); else 401."""
    who = principal(request)
    if who is None:
        raise HTTPException(401, "log in, or send 'Authorization: Bearer <token>' (the local CLI "
                            "reads data_dir/api-token)", headers={"WWW-Authenticate": "Bearer"})
    if who.via == "session" and request.method not in SAFE_METHODS:
        await check_csrf(request)
    return who


async def require_page(request: Request) -> Principal:
    """For the pages: a session, else a redirect to the login page; CSRF on every form post."""
    user = request.session.get("user")
    if not user:
        raise LoginRequiredError(request.url.path)
    if request.method not in SAFE_METHODS:
        await check_csrf(request)
    return Principal(user, "session")
