"""The night as a guest: a real worker process (vLLM on the tiny model) suspends mid-task when
its owner comes back, frees the engine, shows why in the status, and resumes when the owner
leaves, without redoing finished lines. The owner is simulated with the ``file`` probe: the
same policy code reads it as it reads NVML or logind on a real desktop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import batch_line

pytestmark = pytest.mark.slow


def _worker_row(stack, name: str) -> dict:
    return next((w for w in stack.api.get("/api/status").json()["workers"] if w["name"] == name), {})


def test_worker_suspends_for_its_owner_and_resumes_without_redoing_lines(stack_factory, tmp_path):
    owner = tmp_path / "owner-is-here"
    stack = stack_factory(NIGHTSHIFT_YIELD_POLICY__PROBES='["file"]',
                          NIGHTSHIFT_YIELD_POLICY__PRESENCE_FILE=str(owner),
                          NIGHTSHIFT_YIELD_POLICY__START_IDLE_S="0", NIGHTSHIFT_YIELD_POLICY__GRACE_S="0",
                          NIGHTSHIFT_YIELD_POLICY__RESUME_IDLE_S="1", NIGHTSHIFT_YIELD_POLICY__POLL_S="0.2",
                          NIGHTSHIFT_YIELD_POLICY__MAX_SUSPEND_S="600")
    stack.start_worker("w1")
    # Lengths spread from 20 to 310 tokens, so lines finish (and are saved) step after step.
    lines = [batch_line(f"c{i}", f"tell a long story {i}", max_tokens=20 + (i % 30) * 10, temperature=0)
             for i in range(300)]
    task_id = stack.submit(lines)["task_id"]
    stack.wait_until("some lines saved", lambda: stack.task(task_id)["progress_done"] > 0, poll_s=0.05)

    owner.touch()  # the owner sits down at the machine
    row = stack.wait_until("the worker to suspend",
                           lambda: (w := _worker_row(stack, "w1"))["state"] == "suspended" and w, poll_s=0.1)
    assert "owner-is-here exists" in row["state_reason"] and "engine shut down" in row["state_reason"], row
    status = subprocess.run([sys.executable, "-m", "nightshift", "status"], env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert "suspended" in status.stdout, status.stdout
    before = {l["custom_id"]: l for l in stack.lines(task_id, "output")}
    assert 0 < len(before) < len(lines), "the task must be suspended midway"
    held = stack.task(task_id)
    assert held["status"] == "running" and held["progress_done"] == len(before)

    owner.unlink()  # the owner leaves; after resume_idle_s of quiet the worker goes on
    task = stack.wait_finished(task_id, timeout_s=400)

    assert task["status"] == "succeeded", task
    assert [a["status"] for a in task["attempts_detail"]] == ["succeeded"]  # one attempt, resumed
    after = stack.lines(task_id, "output")
    assert sorted(l["custom_id"] for l in after) == sorted(l["custom_id"] for l in lines)
    assert {l["custom_id"]: l for l in after if l["custom_id"] in before} == before
    # tokens of the one attempt = every line's tokens, once: nothing finished was generated again
    total = sum(l["response"]["body"]["usage"]["completion_tokens"] for l in after)
    assert task["attempts_detail"][0]["tokens_out"] == total
    report = stack.api.get(f"/api/nights/{_night(task)}").json()
    assert report["suspensions"] == 1 and report["suspended_s"] > 0, report
    assert report["swaps"] == 2, report  # the first load, and the reload after the suspension


def _night(task: dict) -> str:
    from web.views import night_of
    from datetime import datetime

    return night_of(datetime.fromisoformat(task["started_at"])).isoformat()
