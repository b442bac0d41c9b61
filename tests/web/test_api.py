import json

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
    assert client.post("/api/run-now").json() == {"dispatched": [task_id]}
    assert client.get(f"/api/tasks/{task_id}").json()["status"] == "dispatched"
    assert client.post("/api/run-now").json() == {"dispatched": []}


def test_openapi_schema_documents_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/batches", "/api/tasks", "/api/status", "/api/run-now"} <= set(paths)
