"""The patch workload: a TODO item in, a tested patch on a branch out."""

from jobs.patch.apply import ApplyResult, apply_edits
from jobs.patch.diffs import normalise_diff
from jobs.patch.edits import FileEdit, ParsedEdits, choose_edit_format, parse_edits
from jobs.patch.loop import PatchLoop
from jobs.patch.repo import RepoSnapshot, inspect_repository
from jobs.patch.sandbox import BubblewrapSandbox, Sandbox, SandboxLimits, SandboxResult
from jobs.patch.state import PATCH_KIND, VERDICTS, Candidate, PatchItem, PatchLimits, PatchState
from jobs.patch.testrun import TestReport, detect_test_command, newly_failing, run_tests
from jobs.patch.todo import TodoItem, parse_todo

__all__ = [
    "PATCH_KIND",
    "VERDICTS",
    "ApplyResult",
    "BubblewrapSandbox",
    "Candidate",
    "FileEdit",
    "ParsedEdits",
    "PatchItem",
    "PatchLimits",
    "PatchLoop",
    "PatchState",
    "RepoSnapshot",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "TestReport",
    "TodoItem",
    "apply_edits",
    "choose_edit_format",
    "detect_test_command",
    "inspect_repository",
    "newly_failing",
    "normalise_diff",
    "parse_edits",
    "parse_todo",
    "run_tests",
]
