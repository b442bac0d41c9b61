"""The evening form, tonight's live view and the tokens page, with each bad input shown next
to its field and the user's text kept."""

import json

import pytest

from tests.conftest import batch_line
from tests.jobs.patch_sample import TEST_COMMAND, make_sample_repo


@pytest.fixture
def sample(browser, tmp_path):
    repo = make_sample_repo(tmp_path / "sample")
    resp = browser.post("/evening/repos", data={"csrf_token": browser.csrf, "name": "sample",
                                                "source": str(repo), "test_command": TEST_COMMAND})
    assert resp.status_code == 200 and 'id="added"' in resp.text
    return repo


def _todo(browser, **form):
    data = {"csrf_token": browser.csrf, "repo": "sample", "model": "tiny", "text": "- Fix add", **form}
    return browser.post("/evening/todos", data=data)


def test_registering_a_repository_shows_its_todo_form(browser, sample):
    page = browser.get("/").text
    assert 'id="repo-sample"' in page and TEST_COMMAND in page


def test_a_bad_repository_path_is_shown_next_to_the_field(browser, tmp_path):
    resp = browser.post("/evening/repos", data={"csrf_token": browser.csrf, "name": "x",
                                                "source": str(tmp_path / "nowhere")})
    assert resp.status_code == 422
    assert 'data-field="source"' in resp.text and "does not exist" in resp.text
    assert f'value="{tmp_path / "nowhere"}"' in resp.text


def test_queueing_a_todo_list_goes_to_tonight(browser, sample):
    resp = _todo(browser, text="- Fix add\n- Add sub\n")
    assert resp.status_code == 200 and str(resp.url).endswith("/tonight?queued=1,2")
    assert "Fix add" in resp.text and "Add sub" in resp.text


def test_an_empty_list_keeps_the_form_with_the_error(browser, sample):
    resp = _todo(browser, text="   \n")
    assert resp.status_code == 422 and 'data-field="text"' in resp.text and "no items" in resp.text


def test_an_unknown_repository_is_an_error_on_the_form(browser, sample):
    resp = _todo(browser, repo="nope")
    assert resp.status_code == 422 and "unknown repository" in resp.text


def test_a_past_ready_by_time_keeps_the_users_text(browser, sample):
    resp = _todo(browser, text="- Keep this text", ready_by="2001-01-01T07:00")
    assert resp.status_code == 422 and 'data-field="ready_by"' in resp.text and "in the past" in resp.text
    assert "- Keep this text</textarea>" in resp.text


def test_an_unreadable_ready_by_time_is_an_error(browser, sample):
    resp = _todo(browser, ready_by="tomorrow morning")
    assert resp.status_code == 422 and 'data-field="ready_by"' in resp.text and "YYYY-MM-DD" in resp.text


def test_uploading_a_batch_file(browser):
    data = "\n".join(json.dumps(batch_line(c)) for c in "abc").encode()
    resp = browser.post("/evening/batches", files={"file": ("b.jsonl", data)},
                        data={"csrf_token": browser.csrf, "model": "tiny"})
    assert resp.status_code == 200 and "Queued task(s) 1" in resp.text


def test_an_oversized_batch_is_413_with_the_limit(browser, app):
    app.state.settings.max_batch_bytes = 100
    resp = browser.post("/evening/batches", files={"file": ("b.jsonl", b"x" * 500)},
                        data={"csrf_token": browser.csrf, "model": "tiny"})
    assert resp.status_code == 413 and 'data-field="file"' in resp.text and "100 bytes" in resp.text


def test_a_batch_without_a_file_is_an_error(browser):
    resp = browser.post("/evening/batches", data={"csrf_token": browser.csrf, "model": "tiny"})
    assert resp.status_code == 422 and "no file chosen" in resp.text


def test_preview_says_how_tonight_looks(browser, sample):
    resp = browser.post("/evening/preview", data={"kind": "patch", "model": "tiny", "text": "- a\n- b\n"},
                        headers={"X-CSRF-Token": browser.csrf})
    assert resp.status_code == 200 and "2 item(s)" in resp.text and "Window:" in resp.text
    assert "no worker is connected" in resp.text


def test_tonight_live_fragment_lists_workers_and_queue(browser, sample):
    _todo(browser)
    frag = browser.get("/tonight/live").text
    assert "<html" not in frag and "queued 1" in frag and "No worker has connected yet" in frag


def test_tokens_page_creates_shows_once_and_revokes(browser):
    page = browser.post("/tokens", data={"csrf_token": browser.csrf, "name": "laptop"})
    assert page.status_code == 201 and 'id="new-token">ns_' in page.text
    assert browser.get("/tokens").text.count("ns_") == 2  # the prefixes of two tokens, never a whole one
    bad = browser.post("/tokens", data={"csrf_token": browser.csrf, "name": " "})
    assert bad.status_code == 422 and 'data-field="name"' in bad.text


def test_logout_ends_the_session(browser):
    browser.post("/logout", data={"csrf_token": browser.csrf})
    assert browser.get("/", follow_redirects=False).status_code == 303


def test_tonight_shows_why_a_worker_is_suspended_and_why_a_task_waits(browser, sample, settings):
    from scheduler import session_scope, store
    from scheduler.models import WorkerState

    (task_id,) = _todo(browser, text="- Fix add\n").url.params["queued"].split(",")
    with session_scope(settings.database_url) as session:
        store.record_heartbeat(session, "gamer-pc", state=WorkerState.SUSPENDED, hardware={"gpus": []},
                               state_reason="programs: steam (pid 4242) <b>")
        store.set_plan_notes(session, {int(task_id): "model huge needs 84 GiB; the largest worker GPU has 24 GiB"})
    frag = browser.get("/tonight/live").text
    assert "suspended" in frag and "programs: steam (pid 4242) &lt;b&gt;" in frag
    assert "model huge needs 84 GiB" in frag
