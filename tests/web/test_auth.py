"""The security rules: login, first start, sessions, CSRF, API tokens, paths and escaping."""

import json

import pytest
from sqlmodel import select

from scheduler import session_scope
from scheduler.models import User
from tests.conftest import batch_line
from tests.web.conftest import PASSWORD, csrf_of
from web import auth

PAGES = ["/", "/tonight", "/tonight/live", "/review", "/review/1", "/nights", "/tokens"]
API_GETS = ["/api/tasks", "/api/tasks/1", "/api/status", "/api/repos", "/api/review", "/api/tonight",
            "/api/tokens", "/api/nights/2026-11-21", "/api/estimate?model=tiny", "/api/files/1/patch.diff",
            "/api/tasks/1/output.jsonl", "/api/tasks/1/patch.diff"]
API_POSTS = ["/api/batches", "/api/run-now", "/api/repos", "/api/todos", "/api/tokens",
             "/api/tasks/1/accept", "/api/tasks/1/reject", "/api/tasks/1/requeue"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_login_redirect_to_the_login_page(anon, settings, path):
    auth.set_password(settings, "admin", PASSWORD)
    resp = anon.get(path, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == f"/login?next={path.split('?')[0]}"


@pytest.mark.parametrize("path", API_GETS)
def test_api_reads_without_credentials_are_401(anon, path):
    resp = anon.get(path)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", API_POSTS)
def test_api_writes_without_credentials_are_401(anon, path):
    assert anon.post(path, json={}).status_code == 401


def test_a_wrong_or_revoked_token_is_401(client, anon):
    assert anon.get("/api/tasks", headers={"Authorization": "Bearer ns_not-a-token"}).status_code == 401
    created = client.post("/api/tokens", json={"name": "laptop"}).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert anon.get("/api/tasks", headers=headers).status_code == 200
    assert client.delete(f"/api/tokens/{created['id']}").status_code == 204
    assert anon.get("/api/tasks", headers=headers).status_code == 401
    listed = {t["name"]: t for t in client.get("/api/tokens").json()}
    assert listed["laptop"]["revoked_at"] and "token" not in listed["laptop"]


def test_first_start_asks_for_a_password_with_the_setup_code(anon, settings):
    assert anon.get("/login", follow_redirects=False).headers["location"] == "/setup"
    page = anon.get("/setup")
    code = (settings.data_dir / "setup-code").read_text().strip()
    form = {"csrf_token": csrf_of(page.text), "username": "me", "password": "long enough pw", "confirm": "long enough pw"}
    wrong = anon.post("/setup", data={**form, "code": "guess"})
    assert wrong.status_code == 422 and 'data-field="code"' in wrong.text
    short = anon.post("/setup", data={**form, "code": code, "password": "short", "confirm": "short"})
    assert short.status_code == 422 and "too short" in short.text
    done = anon.post("/setup", data={**form, "code": code}, follow_redirects=False)
    assert done.status_code == 303 and anon.get("/").status_code == 200
    assert not (settings.data_dir / "setup-code").exists()
    assert anon.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_the_password_is_stored_as_an_argon2id_hash(settings):
    auth.set_password(settings, "admin", PASSWORD)
    with session_scope(settings.database_url) as session:
        stored = session.exec(select(User.password_hash)).one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert auth.verify_login(settings, "admin", PASSWORD) and not auth.verify_login(settings, "admin", "nope")


def test_login_with_a_wrong_password_is_refused(anon, settings):
    auth.set_password(settings, "admin", PASSWORD)
    page = anon.get("/login")
    resp = anon.post("/login", data={"csrf_token": csrf_of(page.text), "username": "admin", "password": "wrong"})
    assert resp.status_code == 401 and "wrong user name or password" in resp.text
    assert anon.get("/", follow_redirects=False).status_code == 303


def test_session_cookie_is_httponly_and_samesite(anon, settings):
    auth.set_password(settings, "admin", PASSWORD)
    page = anon.get("/login")
    resp = anon.post("/login", data={"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD},
                     follow_redirects=False)
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_login_never_redirects_to_another_site(anon, settings):
    auth.set_password(settings, "admin", PASSWORD)
    page = anon.get("/login?next=//evil.example/x")
    assert 'value="/"' in page.text
    resp = anon.post("/login", data={"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD,
                                     "next": "https://evil.example/"}, follow_redirects=False)
    assert resp.headers["location"] == "/"


@pytest.mark.parametrize("path,data", [
    ("/login", {"username": "admin", "password": PASSWORD}),
    ("/evening/todos", {"repo": "x", "text": "- a", "model": "tiny"}),
    ("/evening/repos", {"name": "x", "source": "/tmp"}),
    ("/tokens", {"name": "t"}),
    ("/review/1/reject", {"note": ""}),
    ("/logout", {}),
])
def test_forms_with_a_bad_csrf_token_are_403(browser, path, data):
    assert browser.post(path, data={**data, "csrf_token": "forged"}).status_code == 403
    assert browser.post(path, data=data).status_code == 403


def test_api_calls_with_the_session_cookie_need_the_csrf_header(browser):
    assert browser.get("/api/tasks").status_code == 200  # reads need no token
    assert browser.post("/api/tokens", json={"name": "x"}).status_code == 403
    ok = browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": browser.csrf})
    assert ok.status_code == 201


@pytest.mark.parametrize("path", ["../nightshift.db", "../session-secret", "..%2Fsession-secret",
                                  "%2e%2e/api-token", "1/../../api-token", "/etc/passwd"])
def test_paths_that_leave_the_artifacts_folder_are_404(client, settings, path):
    (settings.data_dir / "artifacts" / "1").mkdir(parents=True)
    (settings.data_dir / "artifacts" / "1" / "patch.diff").write_text("diff")
    assert client.get("/api/files/1/patch.diff").text == "diff"
    resp = client.get(f"/api/files/{path}")
    assert resp.status_code == 404, resp.text


def test_a_symlink_out_of_the_artifacts_folder_is_404(client, settings):
    folder = settings.data_dir / "artifacts" / "2"
    folder.mkdir(parents=True)
    (folder / "link").symlink_to(settings.data_dir / "api-token")
    assert client.get("/api/files/2/link").status_code == 404


def test_user_text_is_escaped_in_pages(browser, client):
    resp = client.post("/api/batches", files={"file": ("b.jsonl", json.dumps(batch_line("a")).encode())},
                       data={"model": "tiny", "title": "<script>alert(1)</script>"})
    assert resp.status_code == 201, resp.text
    page = browser.get("/tonight").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
