"""A TODO list through the real system: API, scheduler, a Celery worker running the patch
loop on the real vLLM engine (tiny random model) and the real bubblewrap sandbox."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import require
from tests.jobs.patch_sample import TEST_COMMAND, make_sample_repo

pytestmark = pytest.mark.slow


@pytest.fixture
def sample(tmp_path):
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    return make_sample_repo(tmp_path / "sample")


def _queue(stack, sample, text: str) -> list[int]:
    resp = stack.api.post("/api/repos", json={"name": "sample", "source": str(sample),
                                             "test_command": TEST_COMMAND})
    assert resp.status_code == 201, resp.text
    resp = stack.api.post("/api/todos", json={"repo": "sample", "model": "tiny", "text": text})
    assert resp.status_code == 201, resp.text
    return resp.json()["task_ids"]


def _worktrees(repo) -> list[str]:
    out = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=repo, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.startswith("worktree ")]


def test_random_model_ends_with_a_clean_verdict(stack_factory, sample):
    stack = stack_factory()
    stack.start_worker("w1")
    (task_id,) = _queue(stack, sample, "- Fix add so that test_add passes\n")
    task = stack.wait_finished(task_id, timeout_s=400)
    assert task["status"] == "succeeded", task
    result = task["result"]
    assert result["verdict"] in ("failed", "stuck", "fixed", "partial", "timed out"), result
    assert result["reason"] and result["baseline"]["failed"] == ["tests/test_calc.py::test_add"]
    assert result["engine_calls"] >= 2 and result["tokens_out"] > 0
    assert _worktrees(sample) == [f"worktree {sample}"]
    assert not (stack.data_dir / "worktrees" / f"task-{task_id}").exists()
    shown = subprocess.run([sys.executable, "-m", "nightshift", "show", str(task_id)], env=stack.env,
                           capture_output=True, text=True, timeout=60)
    assert f"verdict: {result['verdict']}" in shown.stdout, shown.stderr


def _checkpoint(stack, task_id: int) -> dict:
    """The task's saved checkpoint, read straight from the database: cheap enough to poll every
    few milliseconds, so the kill lands between two saved steps."""
    with sqlite3.connect(stack.data_dir / "nightshift.db", timeout=5) as db:
        row = db.execute("SELECT checkpoint FROM task WHERE id = ?", (task_id,)).fetchone()
    return (json.loads(row[0]) if row and row[0] else None) or {}


def _kill_after_localise(stack, sample, attempt: int) -> tuple[int, dict] | None:
    """Queue an item and SIGKILL the worker as soon as its localise step is saved. None when the
    item got further than that before the kill landed (a fast machine): the caller tries again."""
    stack.start_worker(f"w{attempt}")
    (task_id,) = _queue(stack, sample, f"- Fix add so that test_add passes (try {attempt})\n")
    stack.wait_until("the localise step to be saved",
                     lambda: "localise" in (_checkpoint(stack, task_id).get("steps_done") or []),
                     poll_s=0.01)
    stack.kill(f"w{attempt}")
    at_kill = _checkpoint(stack, task_id)
    return (task_id, at_kill) if at_kill.get("step") != "done" else None


def test_worker_killed_between_steps_resumes_without_repeating_them(stack_factory, sample):
    # Random answers never apply, so rounds run until the round limit or a repeat: usually
    # seconds of work after localise, a window to kill in.
    stack = stack_factory(NIGHTSHIFT_PATCH_ROUNDS="10", NIGHTSHIFT_PATCH_CANDIDATES="8")
    for attempt in range(1, 4):
        killed = _kill_after_localise(stack, sample, attempt)
        if killed:
            break
    else:
        pytest.fail("three items in a row finished before the kill landed")
    task_id, at_kill = killed
    stack.start_worker("resumer")
    task = stack.wait_finished(task_id, timeout_s=500)

    assert [a["status"] for a in task["attempts_detail"]] == ["lost", "succeeded"]
    result = task["result"]
    steps = result["steps_done"]
    assert steps[:len(at_kill["steps_done"])] == at_kill["steps_done"], (at_kill, result)
    assert steps.count("snapshot") == 1 and steps.count("localise") == 1, steps
    # one localise call, one generate call per round, one critique call per round that had an
    # applicable candidate: none repeated for the resume
    reviewed_rounds = {c["round"] for c in result["candidates"] if c["applied"]}
    assert result["engine_calls"] == 1 + steps.count("generate") + len(reviewed_rounds), result
    assert result["engine_calls"] >= at_kill["engine_calls"]
    assert _worktrees(sample) == [f"worktree {sample}"]
