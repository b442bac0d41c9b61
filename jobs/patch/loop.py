"""The overnight loop for one TODO item: snapshot, localise, generate, test, critique,
choose, record. It calls the ``Engine`` and ``Sandbox`` protocols only.

Each step returns the next one; the state is saved after every step, so a loop killed at any
point resumes at the step it was in. All of a round's candidates come from one batched
engine call, and so do all of a round's critiques.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.engine import Engine, GenerationRequest, GenerationResult, SamplingSpec
from jobs.patch import prompts, repo
from jobs.patch.apply import apply_edits
from jobs.patch.diffs import normalise_diff
from jobs.patch.edits import choose_edit_format, parse_edits
from jobs.patch.sandbox import Sandbox
from jobs.patch.state import Candidate, PatchItem, PatchLimits, PatchState, TestSummary
from jobs.patch.testrun import run_tests
from jobs.patch.verdict import choose, passes, target_tests

log = logging.getLogger(__name__)


class PatchLoop:
    def __init__(self, engine: Engine, sandbox: Sandbox, item: PatchItem, *, workspace: Path,
                 limits: PatchLimits = PatchLimits(), state: PatchState | None = None,
                 save: Callable[[PatchState], None] = lambda _s: None,
                 edit_format: str | None = None) -> None:
        self.engine, self.sandbox, self.item, self.limits = engine, sandbox, item, limits
        self.workspace, self.save = workspace, save
        self.state = state or PatchState()
        self.edit_format = edit_format or choose_edit_format(None)
        self.gen_tokens = min(limits.gen_tokens, engine.max_model_len // 2)
        self.budget = prompts.char_budget(engine.max_model_len, self.gen_tokens)
        self._steps: dict[str, Callable[[], str]] = {
            "snapshot": self._snapshot, "localise": self._localise, "generate": self._generate,
            "test": self._test, "critique": self._critique, "choose": self._choose,
            "record": self._record,
        }

    def run(self) -> PatchState:
        """Run (or resume) to the end; the workspace is gone afterwards, whatever happened."""
        started = time.monotonic()
        elapsed_before = self.state.elapsed_s
        try:
            while self.state.step != "done":
                self.state.elapsed_s = elapsed_before + time.monotonic() - started
                if self.state.step not in ("choose", "record") and self._over_limit():
                    self.state.step = "choose"
                step = self.state.step
                self.state.step = self._steps[step]()
                self.state.steps_done.append(step)
                self.state.elapsed_s = elapsed_before + time.monotonic() - started
                self.save(self.state)
        finally:
            repo.remove_workspace(self.item.repo, self.workspace)
        return self.state

    # --- limits ---------------------------------------------------------------------------

    def _over_limit(self) -> bool:
        s, lim = self.state, self.limits
        if s.stop_reason:
            return True
        if s.elapsed_s > lim.wall_time_s:
            s.stop_reason = f"timed out: the item's wall time limit of {lim.wall_time_s:.0f} s was reached in round {s.round}"
        elif s.tokens_in + s.tokens_out > lim.max_tokens:
            s.stop_reason = f"timed out: the item's budget of {lim.max_tokens} tokens was spent in round {s.round}"
        return s.stop_reason is not None

    # --- steps ------------------------------------------------------------------------------

    def _snapshot(self) -> str:
        tree = repo.add_worktree(self.item.repo, self.workspace / "baseline", self.item.base)
        try:
            if self.item.setup_command:
                setup = self._tests(self.item.setup_command, tree)
                if not setup.ok:
                    return self._infrastructure(f"the setup command failed (exit {setup.exit_code}): "
                                                f"{setup.output[-300:]}")
            baseline = self._tests(self.item.test_command, tree)
        finally:
            repo.remove_worktree(self.item.repo, tree)
        if baseline.exit_code == 127 and not baseline.failed - {self.item.test_command}:
            return self._infrastructure(f"the test command {self.item.test_command!r} was not "
                                        "found (exit 127); fix it in the repository's settings")
        self.state.baseline = TestSummary.of(baseline)
        self.state.targets = sorted(target_tests(self.state.baseline, self.item.text))
        return "localise"

    def _localise(self) -> str:
        files = repo.list_files(self.item.repo)
        ranked = repo.keyword_rank(self.item.repo, files, self.item.text, top=5)
        the_map = prompts.repo_map(self.item.repo, files, self.budget)
        (result,) = self._ask([self._request("localise", prompts.localise(self.item, the_map), n=1, temperature=0)])
        named = prompts.read_localisation(result.choices[0].text, set(files)) if result.choices else []
        self.state.files = (named + [f for f in ranked if f not in named])[:3]
        return "generate"

    def _generate(self) -> str:
        s = self.state
        if s.round == 1:
            messages = prompts.generate(self.item, self.item.repo, s.files, self.edit_format, self.budget)
            requests = [self._request("gen-1", messages, n=self.limits.candidates)]
            parents: list[int | None] = [None]
        else:
            previous = [c for c in s.in_round(s.round - 1) if not passes(c, s.targets)]
            requests = [self._request(f"gen-{s.round}-{c.index}", prompts.revise(
                self.item, self.item.repo, s.files, self.edit_format, self.budget, c)) for c in previous]
            parents = [c.index for c in previous]
        for result, parent in zip(self._ask(requests), parents):
            answers = [c.text for c in result.choices] or [""]
            problems = [f"the model gave no answer: {result.error}"] if result.error else []
            for answer in answers:
                s.candidates.append(Candidate(index=len(s.candidates), round=s.round, answer=answer,
                                              parent=parent, problems=list(problems)))
        return "test"

    def _test(self) -> str:
        s = self.state
        for cand in s.in_round(s.round):
            if not cand.tested:
                self._test_candidate(cand)
                cand.tested = True
                self.save(s)  # a kill mid-step keeps the candidates already tested
        if s.round > 1 and self._repeats_itself():
            s.stop_reason = f"stuck: round {s.round} proposed only changes already tried"
        return "critique"

    def _test_candidate(self, cand: Candidate) -> None:
        if cand.problems:
            return
        parsed = parse_edits(cand.answer, self.edit_format)
        cand.problems += list(parsed.problems)
        if not parsed.edits:
            cand.problems.append("no edit could be read from the answer")
            return
        tree = repo.add_worktree(self.item.repo, self.workspace / f"candidate-{cand.index}", self.item.base)
        try:
            applied = apply_edits(tree, parsed.edits)
            cand.problems += list(applied.failures)
            if not applied.ok:
                return
            cand.applied, cand.diff = True, repo.diff_worktree(tree)
            report = self._tests(self.item.test_command, tree)
        finally:
            repo.remove_worktree(self.item.repo, tree)
        cand.tests = TestSummary.of(report)
        cand.newly_failing = sorted(report.failed - frozenset(self.state.baseline.failed))
        cand.fixed_targets = sorted(set(self.state.targets) - report.failed) if not report.timed_out else []

    def _critique(self) -> str:
        s = self.state
        reviewed = [c for c in s.in_round(s.round) if c.applied and not c.critique]
        if reviewed and not s.stop_reason:
            requests = [self._request(f"review-{c.index}", prompts.critique(self.item, c, self.budget),
                                      n=1, temperature=0) for c in reviewed]
            for cand, result in zip(reviewed, self._ask(requests)):
                cand.critique = result.choices[0].text if result.choices else (result.error or "")
        if s.stop_reason or any(passes(c, s.targets) for c in s.in_round(s.round)):
            return "choose"
        if s.round < self.limits.rounds:
            s.round += 1
            return "generate"
        return "choose"

    def _choose(self) -> str:
        verdict = choose(self.state.candidates, self.state.targets, self.state.stop_reason)
        self.state.verdict, self.state.reason, self.state.chosen = verdict.verdict, verdict.reason, verdict.chosen
        return "record" if verdict.verdict in ("fixed", "partial") else "done"

    def _record(self) -> str:
        chosen = self.state.candidates[self.state.chosen]
        self.state.branch = repo.commit_to_branch(
            self.item.repo, self.workspace, self.item.base, chosen.diff, self.item.branch,
            f"{self.item.title}\n\nNightshift: {self.state.verdict} ({self.state.reason})")
        return "done"

    # --- helpers ------------------------------------------------------------------------------

    def _infrastructure(self, reason: str) -> str:
        self.state.verdict, self.state.reason = "infrastructure error", reason
        return "done"

    def _tests(self, command: str, tree: Path):
        started = time.monotonic()
        try:
            return run_tests(self.sandbox, command, tree, self.limits.tests)
        finally:
            self.state.tests_s += time.monotonic() - started

    def _repeats_itself(self) -> bool:
        s = self.state
        earlier = {normalise_diff(c.diff) for c in s.candidates if c.round < s.round and c.applied}
        now = {normalise_diff(c.diff) for c in s.in_round(s.round) if c.applied}
        return bool(now) and now <= earlier

    def _request(self, request_id: str, messages, n: int = 1, temperature: float = 0.8) -> GenerationRequest:
        # several answers to one prompt are only different when sampled
        sampling = SamplingSpec(max_tokens=self.gen_tokens, n=n,
                                temperature=temperature if n == 1 else max(temperature, 0.7))
        return GenerationRequest(request_id, sampling, messages=messages)

    def _ask(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One batched engine call; results come back in the order of ``requests``."""
        started = time.monotonic()
        results = {r.request_id: r for r in self.engine.generate(list(requests))}
        self.state.model_s += time.monotonic() - started
        self.state.engine_calls += 1
        ordered = [results[r.request_id] for r in requests]
        for r in ordered:
            self.state.tokens_in += r.prompt_tokens
            self.state.tokens_out += r.completion_tokens
        return ordered
