"""The values of the patch loop: what an item is, its limits, and its checkpointed state.

``PatchState`` is saved after every step (and after every tested candidate), so a task
killed mid-loop resumes where it was and never repeats a finished step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from jobs.patch.sandbox import SandboxLimits
from jobs.patch.testrun import TestReport

PATCH_KIND = "patch"

Step = Literal["snapshot", "localise", "generate", "test", "critique", "choose", "record", "done"]
VERDICTS = ("fixed", "partial", "failed", "stuck", "timed out", "infrastructure error")


@dataclass(frozen=True)
class PatchLimits:
    rounds: int = 2
    candidates: int = 4
    wall_time_s: float = 1800.0
    max_tokens: int = 200_000  # prompt + generated, over the whole item
    gen_tokens: int = 2048  # per answer; capped at half the model's context
    tests: SandboxLimits = field(default_factory=lambda: SandboxLimits(wall_time_s=600.0))


@dataclass(frozen=True)
class PatchItem:
    repo: Path
    base: str  # commit every candidate starts from
    title: str
    body: str
    slug: str
    test_command: str
    setup_command: str | None = None
    date: str = "undated"  # YYYY-MM-DD, for the branch name

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}".strip()

    @property
    def branch(self) -> str:
        return f"nightshift/{self.date}/{self.slug}"


class TestSummary(BaseModel):
    """What is kept of a test run: ids, exit, and the output's tail for the critique."""

    __test__ = False  # not a pytest test class

    exit_code: int | None
    timed_out: bool
    failed: list[str]
    passed: list[str]
    output_tail: str
    duration_s: float

    @classmethod
    def of(cls, report: TestReport) -> TestSummary:
        return cls(exit_code=report.exit_code, timed_out=report.timed_out,
                   failed=sorted(report.failed), passed=sorted(report.passed),
                   output_tail=report.output[-4000:], duration_s=report.duration_s)


class Candidate(BaseModel):
    index: int
    round: int
    answer: str
    parent: int | None = None  # the candidate this one revises
    problems: list[str] = Field(default_factory=list)  # parse and apply failures
    applied: bool = False
    tested: bool = False
    diff: str = ""
    tests: TestSummary | None = None
    newly_failing: list[str] = Field(default_factory=list)
    fixed_targets: list[str] = Field(default_factory=list)
    critique: str = ""


class PatchState(BaseModel):
    step: Step = "snapshot"
    round: int = 1
    baseline: TestSummary | None = None
    targets: list[str] = Field(default_factory=list)  # failing tests the item should fix
    files: list[str] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    stop_reason: str | None = None  # "stuck: ..." or "timed out: ..." once a limit ends the loop
    engine_calls: int = 0
    steps_done: list[str] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    model_s: float = 0.0
    tests_s: float = 0.0
    elapsed_s: float = 0.0  # wall time over every attempt
    verdict: str | None = None
    reason: str = ""
    chosen: int | None = None
    branch: str | None = None

    def in_round(self, round_: int) -> list[Candidate]:
        return [c for c in self.candidates if c.round == round_]
