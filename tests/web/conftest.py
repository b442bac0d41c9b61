"""Clients for the web app: with the local CLI's API token, logged in through the pages (a
session cookie and its CSRF token), and anonymous."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from web import auth, create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app, settings):
    """The API with the token the web process wrote for the local CLI."""
    token = (settings.data_dir / "api-token").read_text().strip()
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
def anon(app):
    with TestClient(app) as c:
        yield c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def browser(app, settings):
    """A client logged in through the login form; ``browser.csrf`` is its session's token."""
    auth.set_password(settings, "admin", PASSWORD)
    with TestClient(app) as c:
        page = c.get("/login")
        resp = c.post("/login", data={"csrf_token": csrf_of(page.text), "username": "admin",
                                      "password": PASSWORD}, follow_redirects=False)
        assert resp.status_code == 303, resp.text
        c.csrf = csrf_of(c.get("/").text)
        yield c
