import json

import pytest

from jobs import FakeEngine, run_batch
from jobs.batch import BatchRequest
from scheduler import session_scope, store
from tests.conftest import batch_line


def _upload(client, data: bytes, **form):
    return client.post("/api/batches", files={"file": ("b.jsonl", data)}, data={"model": "tiny", **form})


def _jsonl(*lines) -> bytes:
    return "\n".join(json.dumps(l) if isinstance(l, dict) else l for l in lines).encode()


def test_submit_returns_the_task_and_each_rejected_line(client):
    resp = _upload(client, _jsonl(batch_line("a"), "{bad"))
    assert resp.status_code == 201
    body = resp.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["line"] == 2 and body["rejected"][0]["code"] == "invalid_json"
    task = client.get(f"/api/tasks/{body['task_id']}").json()
    assert task["status"] == "queued" and task["progress_total"] == 1


def test_unknown_model_is_422_naming_the_field(client):
    resp = _upload(client, _jsonl(batch_line("a")), model="nope")
    assert resp.status_code == 422
    assert resp.json()["detail"]["field"] == "model" and "tiny" in resp.json()["detail"]["message"]


def test_oversized_upload_is_413(client, settings):
    resp = _upload(client, b"x" * (settings.max_batch_bytes + 10))
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]["message"]


def test_empty_upload_is_422(client):
    resp = _upload(client, b"")
    assert resp.status_code == 422 and "empty" in resp.json()["detail"]["message"]


def test_bad_deadline_is_422(client):
    resp = _upload(client, _jsonl(batch_line("a")), deadline="tomorrow-ish")
    assert resp.status_code == 422


def test_unknown_task_is_404(client):
    assert client.get("/api/tasks/999").status_code == 404
    assert client.get("/api/tasks/999/output.jsonl").status_code == 404


def test_unknown_download_kind_is_404(client):
    task_id = _upload(client, _jsonl(batch_line("a"))).json()["task_id"]
    assert client.get(f"/api/tasks/{task_id}/secrets.jsonl").status_code == 404


def test_results_and_errors_download_in_input_order(client, settings):
    task_id = _upload(client, _jsonl(batch_line("a"), "{bad", batch_line("b"))).json()["task_id"]
    with session_scope(settings.database_url) as s:
        store.claim_task(s, task_id, "w")
        reqs = [BatchRequest(l.line_no, l.custom_id, **json.loads(l.request))
                for l in store.pending_lines(s, task_id)]
    saved = []
    run_batch(FakeEngine(), reqs, batch_id=f"task-{task_id}", model="tiny", save=saved.extend)
    with session_scope(settings.database_url) as s:
        store.record_lines(s, task_id, saved)
    out = client.get(f"/api/tasks/{task_id}/output.jsonl").text.splitlines()
    errors = client.get(f"/api/tasks/{task_id}/errors.jsonl").text.splitlines()
    assert [json.loads(l)["custom_id"] for l in out] == ["a", "b"]
    assert json.loads(errors[0])["error"]["code"] == "invalid_json"


def test_status_counts_the_queue_and_lists_models(client):
    _upload(client, _jsonl(batch_line("a")))
    status = client.get("/api/status").json()
    assert status["queue"]["queued"] == 1 and status["models"] == ["tiny"]


def test_run_now_dispatches_queued_tasks(client):
    task_id = _upload(client, _jsonl(batch_line("a"))).json()["task_id"]
    # the test settings keep the window always open, so run-now opens none
    assert client.post("/api/run-now").json() == {"dispatched": [task_id], "window": None}
    assert client.get(f"/api/tasks/{task_id}").json()["status"] == "dispatched"
    assert client.post("/api/run-now").json()["dispatched"] == []


def test_openapi_schema_documents_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/batches", "/api/tasks", "/api/status", "/api/run-now"} <= set(paths)


def test_tonight_lists_the_queue_and_next_tasks(client):
    _upload(client, _jsonl(batch_line("a")), title="first")
    body = client.get("/api/tonight").json()
    assert body["queue"]["queued"] == 1 and body["next_up"][0]["title"] == "first"
    assert body["window"]["open"] is True and body["workers"] == [] and body["running"] == []


def test_estimate_needs_history_and_workers_and_names_bad_input(client):
    est = client.get("/api/estimate", params={"model": "tiny", "kind": "batch", "tasks": 1}).json()
    assert est["finish_at"] is None and est["basis"] == "no worker is connected"
    assert client.get("/api/estimate", params={"model": "nope"}).json()["detail"]["field"] == "model"
    assert client.get("/api/estimate", params={"model": "tiny", "kind": "lessons"}).status_code == 422
    assert client.get("/api/estimate", params={"model": "tiny", "tasks": -1}).status_code == 422


def test_review_and_report_refuse_a_bad_night(client):
    assert client.get("/api/review", params={"night": "last tuesday"}).status_code == 422
    assert client.get("/api/review", params={"review": "maybe"}).status_code == 422
    assert client.get("/api/nights/2026-13-01").status_code == 422
    assert client.get("/api/review").json() == {"night": None, "items": [], "total": 0, "offset": 0, "limit": 50}


def test_token_names_are_checked(client):
    assert client.post("/api/tokens", json={"name": ""}).status_code == 422
    assert client.post("/api/tokens", json={"name": "x" * 101}).status_code == 422
    assert client.delete("/api/tokens/999").status_code == 404


def test_a_batch_task_cannot_be_merged_or_requeued(client):
    task_id = _upload(client, _jsonl(batch_line("a"))).json()["task_id"]
    for action, body in (("accept", {"into": "main"}), ("requeue", {"note": "again"})):
        resp = client.post(f"/api/tasks/{task_id}/{action}", json=body)
        assert resp.status_code == 422 and "only TODO items" in resp.json()["detail"]["message"]
    assert client.get(f"/api/tasks/{task_id}/patch.diff").status_code == 404


@pytest.mark.parametrize("duration", ["abc", "0m", "-5m"])
def test_run_now_refuses_a_bad_duration_naming_it(client, duration):
    resp = client.post("/api/run-now", json={"duration": duration})
    assert resp.status_code == 422, resp.text
    assert "duration" in resp.text and "90m" in resp.text
