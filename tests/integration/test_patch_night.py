"""A TODO list through the real system: API, scheduler, a Celery worker running the patch
loop on the real vLLM engine (tiny random model) and the real bubblewrap sandbox."""

from __future__ import annotations

import shutil
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


def test_worker_killed_between_steps_resumes_without_repeating_them(stack_factory, sample):
    # Random answers never apply, so every round runs: about a second each, a window to kill in.
    stack = stack_factory(NIGHTSHIFT_PATCH_ROUNDS="10")
    stack.start_worker("w1")
    (task_id,) = _queue(stack, sample, "- Fix add so that test_add passes\n")
    done_before_kill = stack.wait_until(
        "the localise step to be saved",
        lambda: "localise" in ((stack.task(task_id).get("checkpoint") or {}).get("steps_done") or [])
        and stack.task(task_id)["checkpoint"])
    assert done_before_kill["step"] != "done"

    stack.kill("w1")
    stack.start_worker("w2")
    task = stack.wait_finished(task_id, timeout_s=500)

    assert [a["status"] for a in task["attempts_detail"]] == ["lost", "succeeded"]
    steps = task["result"]["steps_done"]
    assert steps.count("snapshot") == 1 and steps.count("localise") == 1
    # localise + one generate call per round, whatever the kill interrupted
    assert task["result"]["engine_calls"] == 1 + 10, task["result"]
    assert _worktrees(sample) == [f"worktree {sample}"]
