"""The morning through the `nightshift` CLI against a running web process: the review list,
accept (merge), reject, requeue, the night report and a new API token."""

import os
import shutil
import subprocess
import sys

from jobs.patch.repo import git
from tests.conftest import require
from tests.jobs.patch_sample import FIXED, TEST_COMMAND, make_sample_repo, script, whole_file
from tests.scripted import run_patch_night


def _cli(url, settings, *args, env=None):
    env = {**os.environ, "NIGHTSHIFT_API_URL": url, "NIGHTSHIFT_DATA_DIR": str(settings.data_dir),
           "NIGHTSHIFT_CONFIG": str(settings.data_dir.parent / "nightshift.toml"), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nightshift", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_review_accept_reject_requeue_and_report_from_the_cli(web_server, tmp_path):
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    url, settings = web_server
    repo = make_sample_repo(tmp_path / "sample")
    assert _cli(url, settings, "repo", "add", "sample", str(repo), "--test-command", TEST_COMMAND).returncode == 0
    todo = tmp_path / "todo.md"
    todo.write_text("- Fix add so that test_add passes\n- Make add work for negative numbers\n- Fix add again\n")
    out = _cli(url, settings, "submit", "todo", str(todo), "--repo", "sample", "--model", "tiny")
    assert out.returncode == 0, out.stderr
    run_patch_night(settings, [1, 2, 3], script(whole_file(FIXED)))

    listing = _cli(url, settings, "review")
    assert listing.returncode == 0 and "3 finished" in listing.stdout and "fixed" in listing.stdout
    accepted = _cli(url, settings, "accept", "1", "--into", "main")
    assert accepted.returncode == 0 and "into main" in accepted.stdout
    assert (repo / "calc.py").read_text() == FIXED and git(repo, "status", "--porcelain") == ""
    assert _cli(url, settings, "reject", "2", "--note", "same as 1").returncode == 0
    requeued = _cli(url, settings, "requeue", "3", "--note", "also test negatives")
    assert requeued.returncode == 0 and "requeued as task 4" in requeued.stdout
    patch = tmp_path / "p.diff"
    assert _cli(url, settings, "accept", "2", "--download", str(patch)).returncode == 0
    assert "+    return a + b" in patch.read_text()
    assert "rejected" in _cli(url, settings, "review", "--state", "rejected").stdout

    report = _cli(url, settings, "report")
    assert report.returncode == 0 and "3 tasks finished in 3 attempts" in report.stdout

    bad = _cli(url, settings, "accept", "2", "--into", "two words")
    assert bad.returncode == 1 and "into:" in bad.stderr and "not a valid branch name" in bad.stderr
    token = _cli(url, settings, "token", "laptop").stdout.rsplit(" ", 1)[-1].strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    remote = {"NIGHTSHIFT_DATA_DIR": str(elsewhere)}  # another machine: no api-token file there
    denied = _cli(url, settings, "status", env=remote)
    assert denied.returncode == 1 and "NIGHTSHIFT_API_TOKEN" in denied.stderr
    allowed = _cli(url, settings, "status", env={**remote, "NIGHTSHIFT_API_TOKEN": token})
    assert allowed.returncode == 0, allowed.stderr
