"""The patch loop end to end on a real git repository and the real bubblewrap sandbox, with
scripted model answers (the real engine runs it in tests/integration)."""

from __future__ import annotations

import subprocess

import pytest

from jobs import FakeEngine
from jobs.patch.loop import PatchLoop
from jobs.patch.repo import git
from jobs.patch.sandbox import SandboxLimits
from jobs.patch.state import PatchItem, PatchLimits, PatchState
from tests.jobs.patch_sample import (BREAKS_MUL, FIXED, HANGS, TEST_COMMAND, USELESS, make_sample_repo,
                                     script, whole_file)


@pytest.fixture
def sample(tmp_path):
    return make_sample_repo(tmp_path / "repo")


def _item(repo, title="Fix add so that test_add passes", slug="fix-add") -> PatchItem:
    head = git(repo, "rev-parse", "HEAD").strip()
    return PatchItem(repo=repo, base=head, title=title, body="", slug=slug, test_command=TEST_COMMAND,
                     date="2026-11-22")


def _run(sample, sandbox, tmp_path, engine, limits=PatchLimits(rounds=2, candidates=3), **kw) -> PatchState:
    loop = PatchLoop(engine, sandbox, _item(sample), workspace=tmp_path / "ws", limits=limits, **kw)
    return loop.run()


def test_scripted_fix_lands_on_a_branch_whose_tests_pass(sample, sandbox, tmp_path):
    before = git(sample, "rev-parse", "HEAD")
    state = _run(sample, sandbox, tmp_path, FakeEngine(script=script(whole_file(FIXED))))
    assert state.verdict == "fixed", state.reason
    assert state.branch == "nightshift/2026-11-22/fix-add"
    assert state.baseline.failed == ["tests/test_calc.py::test_add"]
    # the branch holds the fix and its tests pass; the user's branch and files are untouched
    assert git(sample, "show", f"{state.branch}:calc.py") == FIXED
    assert git(sample, "rev-parse", "HEAD") == before and git(sample, "branch", "--show-current").strip() == "main"
    check = tmp_path / "check"
    git(sample, "worktree", "add", str(check), state.branch)
    assert subprocess.run(TEST_COMMAND.split(), cwd=check).returncode == 0
    assert not (tmp_path / "ws").exists()


def test_one_batched_engine_call_per_step(sample, sandbox, tmp_path):
    engine = FakeEngine(script=script(whole_file(FIXED)))
    state = _run(sample, sandbox, tmp_path, engine)
    # localise, generate (3 candidates as n=3 in one request), critique (3 reviews in one call)
    assert state.engine_calls == 3 and len(engine.calls) == 3
    assert engine.calls[1] == ["gen-1"] and len(engine.calls[2]) == 3
    assert len(state.candidates) == 3


def test_unparseable_answer_fails_with_no_applicable_edit(sample, sandbox, tmp_path):
    state = _run(sample, sandbox, tmp_path, FakeEngine(script=script("I would fix the add function.")))
    assert state.verdict == "failed" and "no applicable edit" in state.reason
    assert state.branch is None


def test_edit_that_breaks_other_tests_fails_and_names_them(sample, sandbox, tmp_path):
    limits = PatchLimits(rounds=1, candidates=2)
    state = _run(sample, sandbox, tmp_path, FakeEngine(script=script(whole_file(BREAKS_MUL))), limits=limits)
    assert state.verdict == "failed" and "test_mul" in state.reason


def test_tests_that_hang_end_as_timed_out(sample, sandbox, tmp_path):
    limits = PatchLimits(rounds=1, candidates=1, tests=SandboxLimits(wall_time_s=5))
    state = _run(sample, sandbox, tmp_path, FakeEngine(script=script(whole_file(HANGS))), limits=limits)
    assert state.verdict == "timed out", state.reason


def test_a_loop_that_repeats_itself_is_stopped_as_stuck(sample, sandbox, tmp_path):
    limits = PatchLimits(rounds=5, candidates=2)
    engine = FakeEngine(script=script(whole_file(USELESS)))
    state = _run(sample, sandbox, tmp_path, engine, limits=limits)
    assert state.verdict == "stuck", state.reason
    assert state.round == 2  # stopped at the first repeat, not after five rounds


def test_revision_round_uses_the_feedback_and_can_fix(sample, sandbox, tmp_path):
    engine = FakeEngine(script=script(whole_file(BREAKS_MUL), whole_file(FIXED)))
    state = _run(sample, sandbox, tmp_path, engine)
    assert state.verdict == "fixed" and state.round == 2
    revision = [c for c in state.candidates if c.round == 2]
    assert revision and all(c.parent is not None for c in revision)


def test_missing_test_command_is_an_infrastructure_error(sample, sandbox, tmp_path):
    item = _item(sample)
    item = PatchItem(**{**item.__dict__, "test_command": "no-such-test-runner --all"})
    state = PatchLoop(FakeEngine(script=script(whole_file(FIXED))), sandbox, item,
                      workspace=tmp_path / "ws").run()
    assert state.verdict == "infrastructure error" and "not found" in state.reason


def test_resumed_loop_repeats_no_finished_step(sample, sandbox, tmp_path):
    uninterrupted = _run(sample, sandbox, tmp_path, FakeEngine(script=script(whole_file(FIXED))))
    saved: list[dict] = []

    class Killed(BaseException):
        pass

    def save_then_die(state):
        saved.append(state.model_dump(mode="json"))
        if state.steps_done[-1:] == ["generate"]:
            raise Killed  # the worker dies right after the generate step is saved

    first = FakeEngine(script=script(whole_file(FIXED)))
    git(sample, "branch", "-D", uninterrupted.branch)
    with pytest.raises(Killed):
        _run(sample, sandbox, tmp_path, first, save=save_then_die)
    second = FakeEngine(script=script(whole_file(FIXED)))
    state = _run(sample, sandbox, tmp_path, second, state=PatchState.model_validate(saved[-1]))
    assert state.verdict == "fixed"
    assert len(first.calls) + len(second.calls) == uninterrupted.engine_calls
    assert [c[0] for c in second.calls] == ["review-0"]
