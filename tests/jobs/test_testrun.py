"""Test commands found per layout, and test runs read through the real bubblewrap sandbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jobs.errors import RepositoryError
from jobs.patch.sandbox import SandboxLimits
from jobs.patch.testrun import (CARGO, GO, MAKE, NPM, PYTEST, TIMEOUT_ID, detect_test_command,
                                newly_failing, parse_test_ids, run_tests)

pytestmark = pytest.mark.timeout(120)

PYTEST_RA = f"{sys.executable} -m pytest -q -rA -p no:cacheprovider"
LIMITS = SandboxLimits(wall_time_s=60)
SAMPLE = """\
import pytest


def test_ok():
    assert True


def test_bad():
    assert 1 == 2


@pytest.mark.parametrize("text", ["a b - c"])
def test_param(text):
    assert text == "nope"
"""
OK = "tests/test_sample.py::test_ok"
BAD = "tests/test_sample.py::test_bad"
PARAM = "tests/test_sample.py::test_param[a b - c]"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "tests" / "test_sample.py").write_text(SAMPLE)
    return root


def _layout(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("files", "expected"), [
    ({"pytest.ini": "[pytest]\n"}, PYTEST),
    ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, PYTEST),
    ({"pyproject.toml": "[project]\nname = 'x'\n"}, None),
    ({"pyproject.toml": "[tool.pytest\nbroken"}, None),
    ({"setup.cfg": "[tool:pytest]\ntestpaths = tests\n"}, PYTEST),
    ({"setup.cfg": "[metadata]\nname = x\n"}, None),
    ({"tox.ini": "[pytest]\naddopts = -q\n"}, PYTEST),
    ({"tests/unit/test_x.py": "def test_x(): pass\n"}, PYTEST),
    ({"tests/data.txt": "not python"}, None),
    ({"package.json": json.dumps({"scripts": {"test": "jest"}})}, NPM),
    ({"package.json": json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})},
     None),
    ({"package.json": json.dumps({"scripts": {"build": "tsc"}})}, None),
    ({"package.json": "{not json"}, None),
    ({"Cargo.toml": "[package]\nname = 'x'\n"}, CARGO),
    ({"go.mod": "module example.com/x\n"}, GO),
    ({"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./run-tests\n"}, MAKE),
    ({"Makefile": "test:: build\n\t./run-tests\n"}, MAKE),
    ({"Makefile": "test := 1\nall:\n\ttrue\n"}, None),
    ({"Makefile": ".PHONY: test\nall:\n\ttrue\n"}, None),
    ({}, None),
    ({"pytest.ini": "[pytest]\n", "Makefile": "test:\n\ttrue\n"}, PYTEST),  # pytest first
    ({"package.json": json.dumps({"scripts": {"test": "jest"}}), "Makefile": "test:\n"}, NPM),
])
def test_detect_test_command_per_layout(tmp_path, files, expected):
    assert detect_test_command(_layout(tmp_path / "repo", files)) == expected


def test_detect_test_command_on_a_missing_directory_names_it(tmp_path):
    with pytest.raises(RepositoryError, match="absent"):
        detect_test_command(tmp_path / "absent")


def test_parse_reads_summary_and_verbose_lines():
    output = "\n".join([
        "tests/test_a.py::test_v PASSED                                 [ 33%]",
        "tests/test_a.py::test_w FAILED                                 [ 66%]",
        "Build PASSED",
        "=========================== short test summary info ============================",
        "\x1b[31mFAILED\x1b[0m tests/test_a.py::test_x - AssertionError: assert 1 == 2",
        "FAILED tests/test_a.py::test_y[a b - c] - ValueError: x - y",
        "FAILED tests/test_a.py::Cls::test_z",
        "ERROR tests/test_b.py - ModuleNotFoundError: No module named 'missing'",
        "ERROR tests/test_a.py::test_t - RuntimeError: teardown",
        "PASSED tests/test_a.py::test_t",
        "PASSED tests/test_a.py::test_u",
    ])
    failed, passed = parse_test_ids(output)
    assert failed == {"tests/test_a.py::test_w", "tests/test_a.py::test_x", "tests/test_a.py::test_y[a b - c]",
                      "tests/test_a.py::Cls::test_z", "tests/test_b.py", "tests/test_a.py::test_t"}
    assert passed == {"tests/test_a.py::test_v", "tests/test_a.py::test_u"}


def test_pytest_run_names_failing_and_passing_tests(sandbox, project):
    report = run_tests(sandbox, PYTEST_RA, project, LIMITS)
    assert report.exit_code == 1 and not report.timed_out and not report.ok, report.output
    assert report.failed == {BAD, PARAM}
    assert report.passed == {OK}
    assert report.command == PYTEST_RA and report.duration_s > 0


def test_newly_failing_names_tests_a_change_broke(sandbox, project):
    baseline = run_tests(sandbox, PYTEST_RA, project, LIMITS)
    test_file = project / "tests" / "test_sample.py"
    # the change fixes test_bad and breaks test_ok
    test_file.write_text(test_file.read_text().replace("assert 1 == 2", "assert 2 == 2")
                         .replace("assert True", "assert False"))
    after = run_tests(sandbox, PYTEST_RA, project, LIMITS)
    assert after.failed == {OK, PARAM} and after.passed == {BAD}
    assert newly_failing(baseline, after) == {OK}
    assert newly_failing(after, after) == frozenset()


def test_timed_out_run_counts_as_failing(sandbox, project):
    hang = "import time\n\n\ndef test_hang():\n    time.sleep(1000)\n"
    (project / "tests" / "test_hang.py").write_text(hang)
    report = run_tests(sandbox, PYTEST_RA, project, SandboxLimits(wall_time_s=3))
    assert report.timed_out and report.exit_code is None and not report.ok
    assert TIMEOUT_ID in report.failed
    assert report.duration_s < 6


def test_unreadable_runner_fails_as_its_command(sandbox, tmp_path):
    failing = run_tests(sandbox, "echo 'something broke'; exit 2", tmp_path, LIMITS)
    assert failing.failed == {"echo 'something broke'; exit 2"} and failing.passed == frozenset()
    passing = run_tests(sandbox, "echo 'all good'", tmp_path, LIMITS)
    assert passing.ok and passing.failed == frozenset()


def test_missing_test_runner_is_a_failing_run(sandbox, tmp_path):
    report = run_tests(sandbox, "no-such-test-runner --all", tmp_path, LIMITS)
    assert report.exit_code == 127 and "not found" in report.output
    assert report.failed == {"no-such-test-runner --all"}
