"""The morning review through the API and the pages, after a night run in-process with a
scripted engine on a real sample repository and the real sandbox."""

import shutil
from datetime import date

import pytest

from jobs.patch.repo import git
from tests.conftest import require
from tests.jobs.patch_sample import FIXED, TEST_COMMAND, make_sample_repo, script, whole_file
from tests.scripted import run_patch_night
from web import views

TODO = "- Fix add so that test_add passes\n- Make add correct for negative numbers too\n"


@pytest.fixture
def night(client, settings, tmp_path):
    """Two TODO items, both fixed overnight on branches of the sample repository."""
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    repo = make_sample_repo(tmp_path / "sample")
    assert client.post("/api/repos", json={"name": "sample", "source": str(repo),
                                           "test_command": TEST_COMMAND}).status_code == 201
    ids = client.post("/api/todos", json={"repo": "sample", "model": "tiny", "text": TODO}).json()["task_ids"]
    run_patch_night(settings, ids, script(whole_file(FIXED)))
    return repo, ids


def test_review_lists_the_nights_items_with_their_verdicts(client, night):
    _, ids = night
    page = client.get("/api/review").json()
    assert page["total"] == 2 and {i["id"] for i in page["items"]} == set(ids)
    assert all(i["verdict"] == "fixed" and i["branch"].startswith("nightshift/") for i in page["items"])
    tonight = views.night_of(views.utcnow())
    assert client.get(f"/api/review?night={tonight.isoformat()}").json()["total"] == 2
    assert client.get("/api/review?night=2001-01-01").json()["total"] == 0


def test_accept_merges_the_branch_and_reject_keeps_the_repo(client, night):
    repo, (first, second) = night
    resp = client.post(f"/api/tasks/{first}/accept", json={"into": "main"})
    assert resp.status_code == 200, resp.text
    assert (repo / "calc.py").read_text() == FIXED
    assert git(repo, "rev-parse", "main").strip() == resp.json()["commit"]
    assert client.post(f"/api/tasks/{second}/reject", json={"note": "duplicate"}).status_code == 200
    tasks = {t["id"]: t for t in (client.get(f"/api/tasks/{i}").json() for i in (first, second))}
    assert tasks[first]["review"] == "accepted" and tasks[first]["merged_into"] == "main"
    assert tasks[second]["review"] == "rejected" and tasks[second]["review_note"] == "duplicate"


def test_accept_refuses_a_dirty_checkout_naming_the_field(client, night):
    repo, (first, _) = night
    (repo / "calc.py").write_text("# unsaved\n")
    resp = client.post(f"/api/tasks/{first}/accept", json={"into": "main"})
    assert resp.status_code == 422 and resp.json()["detail"]["field"] == "into"
    assert (repo / "calc.py").read_text() == "# unsaved\n"


def test_requeue_carries_the_note_into_a_new_task(client, night):
    _, (first, _) = night
    assert client.post(f"/api/tasks/{first}/requeue", json={"note": " "}).json()["detail"]["field"] == "note"
    resp = client.post(f"/api/tasks/{first}/requeue", json={"note": "keep the docstring"})
    assert resp.status_code == 201
    new = client.get(f"/api/tasks/{resp.json()['task_id']}").json()
    assert new["status"] == "queued" and "keep the docstring" in new["input"]["item"]["body"]
    assert client.get(f"/api/tasks/{first}").json()["requeued_as"] == new["id"]


def test_the_patch_downloads_as_kept(client, night, settings):
    _, (first, _) = night
    resp = client.get(f"/api/tasks/{first}/patch.diff")
    assert resp.status_code == 200 and "+    return a + b" in resp.text
    assert resp.text == (settings.data_dir / "artifacts" / str(first) / "patch.diff").read_text()


def test_review_actions_on_unknown_or_unfinished_tasks(client, night, settings):
    assert client.post("/api/tasks/999/accept", json={"into": "main"}).status_code == 404
    assert client.post("/api/tasks/999/reject", json={}).status_code == 404
    queued = client.post("/api/todos", json={"repo": "sample", "model": "tiny", "text": "- later"}).json()
    resp = client.post(f"/api/tasks/{queued['task_ids'][0]}/accept", json={"into": "main"})
    assert resp.status_code == 422 and "once it has finished" in resp.json()["detail"]["message"]


def test_night_report_counts_the_attempts_and_tokens(client, night):
    report = client.get(f"/api/nights/{views.night_of(views.utcnow()).isoformat()}").json()
    assert report["attempts"] == 2 and len(report["bars"]) == 2 and report["tasks_finished"] == 2
    assert report["tokens_out"] > 0 and report["worker_hours"] > 0
    assert "not measured" in report["energy"]
    assert client.get("/api/nights/2001-01-01").json()["attempts"] == 0
    assert client.get("/api/nights/yesterday").status_code == 422


# --- the same through the pages -----------------------------------------------------------------


def test_item_page_shows_the_highlighted_diff_tests_and_critique(browser, night):
    _, (first, _) = night
    page = browser.get(f"/review/{first}").text
    assert '<div class="code"><pre>' in page and 'class="gi"' in page  # pygments' inserted lines
    assert "Looks right." in page and "tests/test_calc.py::test_add" in page
    assert 'id="accept"' in page and f"/api/tasks/{first}/patch.diff" in page


def test_accept_and_reject_through_the_item_page(browser, night):
    repo, (first, second) = night
    bad = browser.post(f"/review/{first}/accept", data={"csrf_token": browser.csrf, "into": "two words"})
    assert bad.status_code == 422 and 'data-field="into"' in bad.text and 'value="two words"' in bad.text
    done = browser.post(f"/review/{first}/accept", data={"csrf_token": browser.csrf, "into": "main"})
    assert "merged into main" in done.text and (repo / "calc.py").read_text() == FIXED
    rejected = browser.post(f"/review/{second}/reject", data={"csrf_token": browser.csrf, "note": ""})
    assert 'id="review-state">rejected' in rejected.text


def test_review_list_and_report_pages_render(browser, night):
    listing = browser.get("/review").text
    assert listing.count('href="/review/') >= 2 and "2 item(s)" in listing
    report = browser.get("/nights", follow_redirects=True).text
    assert "<svg" in report and report.count("<rect") == 2  # two attempts, no swaps recorded here


def test_an_unknown_task_page_is_404(browser):
    assert browser.get("/review/12345").status_code == 404


def test_today_is_a_night_of_its_own_noon_to_noon():
    start, end = views.night_bounds(date(2026, 11, 21))
    assert (end - start).total_seconds() in (23 * 3600, 24 * 3600, 25 * 3600)
    assert views.night_of(start) == date(2026, 11, 21) and views.night_of(end) == date(2026, 11, 22)


def test_night_report_draws_swaps_and_suspensions_and_sums_energy(client, browser, night, settings):
    from datetime import timedelta

    from scheduler import session_scope, store
    from sqlmodel import select

    from scheduler.models import Attempt, WorkerEventKind

    now = views.utcnow()
    with session_scope(settings.database_url) as session:
        store.record_worker_event(session, "gpu-box", WorkerEventKind.SWAP, now - timedelta(seconds=40),
                                  now - timedelta(seconds=28), model="tiny", detail="nothing -> tiny")
        store.record_worker_event(session, "gpu-box", WorkerEventKind.SUSPEND, now - timedelta(seconds=20),
                                  now - timedelta(seconds=5), task_id=1, detail="programs: steam")
        first = session.exec(select(Attempt).order_by(Attempt.id)).first()
        store.record_attempt_energy(session, first.id, 7200.0, "nvml-counter")
    report = client.get(f"/api/nights/{views.night_of(now).isoformat()}").json()
    assert report["swaps"] == 1 and abs(report["swap_s"] - 12) < 0.01
    assert report["suspensions"] == 1 and abs(report["suspended_s"] - 15) < 0.01
    assert report["energy_kwh"] == 0.002 and "nvml-counter" in report["energy"] and "1 of 2" in report["energy"]
    page = browser.get(f"/nights/{views.night_of(now).isoformat()}").text
    assert page.count('class="swap"') == 1 and page.count('class="suspend"') == 1
    assert "programs: steam" in page and "12 s" in page
