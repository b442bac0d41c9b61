"""The first overnight run, end to end, on real processes: the API takes a batch, the
scheduler dispatches it through a real broker, a Celery worker runs it on the real vLLM engine
(CPU build, tiny generated model), and the results come back one for one."""

from __future__ import annotations

import pytest

from tests.conftest import batch_line

pytestmark = pytest.mark.slow

TOO_LONG = "q z " * 1500  # far more than the tiny model's 1024 tokens


def _mixed_batch(n: int) -> list[dict]:
    lines = [batch_line(f"chat-{i}", f"question number {i}", max_tokens=12, temperature=0)
             for i in range(n)]
    lines += [{"custom_id": f"text-{i}", "method": "POST", "url": "/v1/completions",
               "body": {"prompt": f"def f{i}(x):", "max_tokens": 8, "temperature": 0}}
              for i in range(n)]
    lines.append(batch_line("too-long", TOO_LONG, max_tokens=4))
    lines.append({"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {}})
    return lines


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
def test_batch_runs_on_a_real_worker_and_results_match_the_input(broker, stack_factory, request):
    broker_url = request.getfixturevalue("redis_url") if broker == "redis" else None
    stack = stack_factory(broker_url)
    stack.start_worker("w1")
    lines = _mixed_batch(20)
    receipt = stack.submit(lines)
    assert receipt["accepted"] == 41 and receipt["rejected"][0]["code"] == "unsupported_url"

    task = stack.wait_finished(receipt["task_id"])

    assert task["status"] == "succeeded", task
    output, errors = stack.lines(task["id"], "output"), stack.lines(task["id"], "errors")
    returned = [line["custom_id"] for line in output + errors]
    assert sorted(returned) == sorted(line["custom_id"] for line in lines)  # one for one
    by_error = {e["custom_id"]: e["error"] for e in errors}
    assert by_error["too-long"]["code"] == "engine_rejected" and "1024" in by_error["too-long"]["message"]
    assert by_error["bad-url"]["code"] == "unsupported_url"
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["model"] == "tiny"
        assert 0 < body["usage"]["completion_tokens"] <= 12
    attempt = task["attempts_detail"][0]
    assert attempt["status"] == "succeeded" and attempt["tokens_out"] > 0
    worker = stack.api.get("/api/status").json()["workers"][0]
    assert worker["name"] == "w1" and worker["resident_model"] == "tiny"


def test_greedy_results_are_reproducible_across_workers(stack_factory):
    stack = stack_factory()
    stack.start_worker("w1")
    lines = [batch_line(f"c{i}", f"say {i}", max_tokens=10, temperature=0) for i in range(5)]
    first = stack.wait_finished(stack.submit(lines)["task_id"])
    second = stack.wait_finished(stack.submit(lines)["task_id"])
    texts = [[l["response"]["body"]["choices"][0]["message"]["content"]
              for l in stack.lines(t["id"], "output")] for t in (first, second)]
    assert texts[0] == texts[1]


def test_worker_killed_mid_task_is_redelivered_and_completes_once(stack_factory):
    stack = stack_factory()
    stack.start_worker("w1")
    # Lengths spread from 20 to 310 tokens, so requests finish (and are saved) step after step.
    lines = [batch_line(f"c{i}", f"tell a long story {i}", max_tokens=20 + (i % 30) * 10, temperature=0)
             for i in range(300)]
    task_id = stack.submit(lines)["task_id"]
    stack.wait_until("some lines saved", lambda: stack.task(task_id)["progress_done"] > 0)
    before = {l["custom_id"]: l for l in stack.lines(task_id, "output")}
    assert 0 < len(before) < len(lines), "the task must be killed midway"

    stack.kill("w1")
    stack.start_worker("w2")
    task = stack.wait_finished(task_id, timeout_s=400)

    assert task["status"] == "succeeded", task
    assert [a["status"] for a in task["attempts_detail"]] == ["lost", "succeeded"]
    assert task["attempts_detail"][1]["worker_name"] == "w2"
    after = stack.lines(task_id, "output")
    assert sorted(l["custom_id"] for l in after) == sorted(l["custom_id"] for l in lines)
    kept = {l["custom_id"]: l for l in after if l["custom_id"] in before}
    assert kept == before  # finished lines were neither redone nor duplicated
    redone = task["attempts_detail"][1]["tokens_out"]
    total = sum(l["response"]["body"]["usage"]["completion_tokens"] for l in after)
    assert 0 < redone < total
