"""Find a repository's test command, run it in a sandbox and read which tests failed.

Test ids come from pytest's summary lines (``FAILED id - message``, ``ERROR id``, and with
``-rA`` also ``PASSED id``) and from its verbose lines (``id PASSED [ 50%]``). For output we
cannot read, a failing run is one failure named after the command, so that a run which fails
never looks like one without failures.
"""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from jobs.errors import RepositoryError
from jobs.patch.sandbox import Sandbox, SandboxLimits

# python3: Debian has no "python"; -rA lists passing tests too, for the intent check.
PYTEST = "python3 -m pytest -q -rA"
NPM = "npm test"
CARGO = "cargo test"
GO = "go test ./..."
MAKE = "make test"
TEST_COMMANDS = MappingProxyType({"pytest": PYTEST, "npm": NPM, "cargo": CARGO, "go": GO, "make": MAKE})

TIMEOUT_ID = "<timeout>"
# What `npm init` writes when there are no tests: running it only reports that.
NPM_PLACEHOLDER = re.compile(r"no test specified")
# A `test:` or `test::` rule; not the assignments `test := x`, `test ::= x`.
MAKE_TEST_TARGET = re.compile(r"^test\s*(?:::(?!=)|:(?![:=]))", re.MULTILINE)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A node id is a path, then '::' parts, maybe a parameter list in brackets that may hold
# spaces and ' - '; the lazy bracket match stops at the first ']' the line can end after.
# Verbose lines must name a test ('::'), or any "Build PASSED" in a log would count.
_PARAMS = r"(?:\[.*?\])?"
SUMMARY_LINE = re.compile(rf"^(?P<word>FAILED|ERROR|PASSED) (?P<id>[^\s\[]+{_PARAMS})(?= - |\s*$)")
VERBOSE_LINE = re.compile(
    rf"^(?P<id>[^\s\[]+::[^\s\[]+{_PARAMS}) (?P<word>FAILED|ERROR|PASSED)(?:\s+\[\s*\d+%\])?\s*$")


@dataclass(frozen=True)
class TestReport:
    __test__ = False  # not a pytest test class, though its name says Test

    command: str
    exit_code: int | None
    timed_out: bool
    failed: frozenset[str]  # failing test ids, or {command} when the output cannot be read
    passed: frozenset[str]  # passing test ids when the output names them, else empty
    output: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def detect_test_command(repo: Path) -> str | None:
    """The test command for ``repo``'s layout, the first that matches in the order of
    ``TEST_COMMANDS``; None when nothing does."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError("repository", f"{repo} is not a directory")
    checks = ((_uses_pytest, PYTEST), (_has_npm_test, NPM), (lambda r: (r / "Cargo.toml").is_file(), CARGO),
              (lambda r: (r / "go.mod").is_file(), GO), (_has_make_test, MAKE))
    return next((command for matches, command in checks if matches(repo)), None)


def run_tests(sandbox: Sandbox, command: str, workdir: Path, limits: SandboxLimits) -> TestReport:
    result = sandbox.run(command, workdir, limits)
    failed, passed = parse_test_ids(result.output)
    if result.timed_out:
        failed |= {TIMEOUT_ID}  # whatever finished before the kill, the run as a whole failed
    elif result.exit_code != 0 and not failed:
        failed = {command}
    return TestReport(command=command, exit_code=result.exit_code, timed_out=result.timed_out,
                      failed=frozenset(failed), passed=frozenset(passed),
                      output=result.output, duration_s=result.duration_s)


def newly_failing(baseline: TestReport, after: TestReport) -> frozenset[str]:
    """Ids failing after a change that did not fail before it."""
    return after.failed - baseline.failed


def parse_test_ids(output: str) -> tuple[set[str], set[str]]:
    """(failed, passed) test ids named in pytest's output; an id both failing and passing
    (a test whose teardown errs) counts as failing."""
    failed: set[str] = set()
    passed: set[str] = set()
    for line in ANSI_ESCAPE.sub("", output).splitlines():
        found = SUMMARY_LINE.match(line) or VERBOSE_LINE.match(line.rstrip())
        if found:
            (passed if found["word"] == "PASSED" else failed).add(found["id"])
    return failed, passed - failed


def _uses_pytest(repo: Path) -> bool:
    if (repo / "pytest.ini").is_file():
        return True
    tool = _toml(repo / "pyproject.toml").get("tool")
    if isinstance(tool, dict) and "pytest" in tool:
        return True
    if _ini_has(repo / "setup.cfg", "tool:pytest") or _ini_has(repo / "tox.ini", "pytest"):
        return True
    tests = repo / "tests"
    return tests.is_dir() and any(p.is_file() for p in tests.rglob("*.py"))


def _has_npm_test(repo: Path) -> bool:
    try:
        package = json.loads((repo / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    scripts = package.get("scripts") if isinstance(package, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    return isinstance(test, str) and bool(test.strip()) and not NPM_PLACEHOLDER.search(test)


def _has_make_test(repo: Path) -> bool:
    for name in ("GNUmakefile", "makefile", "Makefile"):
        try:
            if MAKE_TEST_TARGET.search((repo / name).read_text(encoding="utf-8", errors="replace")):
                return True
        except OSError:
            continue
    return False


def _toml(path: Path) -> dict:
    # A file that does not parse is no evidence of anything; other checks still run.
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _ini_has(path: Path, section: str) -> bool:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, configparser.Error):
        return False
    return parser.has_section(section)
