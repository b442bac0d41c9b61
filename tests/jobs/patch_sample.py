"""A small sample repository with a failing test, and scripted model answers for it.
Shared by the patch loop's tests and bench/patch_loop.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.engine import GenerationRequest

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TESTS = ("from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
         "def test_mul():\n    assert mul(2, 3) == 6\n")
TEST_COMMAND = f"{sys.executable} -m pytest -q -p no:cacheprovider"
FIXED = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
BREAKS_MUL = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n"
HANGS = "def add(a, b):\n    while True:\n        pass\n\n\ndef mul(a, b):\n    return a * b\n"
USELESS = "def add(a, b):\n    return a - b  # unchanged logic\n\n\ndef mul(a, b):\n    return a * b\n"


def make_sample_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "calc.py").write_text(CALC)
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text(TESTS)
    (root / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "sample"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True)
    return root


def whole_file(content: str, path: str = "calc.py") -> str:
    return f"{path}\n```python\n{content}```\n"


def script(*rounds: str, localise: str = "calc.py", review: str = "Looks right.") -> Callable[[GenerationRequest], Sequence[str]]:
    """Answers by request kind: ``rounds[r]`` is the edit every candidate gives in round r+1."""

    def answer(req: GenerationRequest) -> Sequence[str]:
        kind = req.request_id
        if kind == "localise":
            return [localise]
        if kind.startswith("review"):
            return [review]
        round_ = int(kind.split("-")[1])
        return [rounds[min(round_, len(rounds)) - 1]] * req.sampling.n

    return answer
