"""The package boundaries of STYLE.md, checked mechanically, and complete public lists."""

import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["jobs", "jobs.patch", "scheduler", "workers", "web", "rdma_loader", "nightshift"]


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extra"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_exist(name):
    package = importlib.import_module(name)
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing


def test_scheduler_and_web_import_without_vllm():
    code = ("import sys; import scheduler.service, web.app, nightshift.cli; "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_every_error_class_ends_in_error():
    for name in ("jobs.errors", "scheduler.errors"):
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == name:
                assert cls_name.endswith("Error"), cls_name
