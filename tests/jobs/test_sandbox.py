"""The bubblewrap sandbox on the real bwrap: what the command can reach (network, files,
environment) and the limits that stop it (wall time, memory, processes)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from jobs.errors import RepositoryError, SandboxUnavailableError
from jobs.patch.sandbox import BubblewrapSandbox, Sandbox, SandboxLimits
from tests.conftest import free_port, require

pytestmark = pytest.mark.timeout(60)

PY = sys.executable  # the venv's python: readable inside, since the whole system is bound
QUICK = SandboxLimits(wall_time_s=30)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # it exited while we looked
    return found


def _process_count() -> int:
    return sum(1 for entry in Path("/proc").iterdir() if entry.name.isdigit())


def test_missing_bwrap_is_unavailable_and_names_the_install_command():
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        BubblewrapSandbox(bwrap="/nonexistent/bwrap")


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_processes"):
        SandboxLimits(max_processes=0)


def test_bubblewrap_sandbox_is_a_sandbox(sandbox):
    assert isinstance(sandbox, Sandbox)


def test_exit_code_and_both_streams_are_reported(sandbox, workdir):
    result = sandbox.run("echo to-stdout; echo to-stderr >&2; exit 3", workdir, QUICK)
    assert result.exit_code == 3 and not result.timed_out
    assert "to-stdout" in result.output and "to-stderr" in result.output


def test_missing_workdir_is_a_repository_error(sandbox, tmp_path):
    with pytest.raises(RepositoryError, match="workdir"):
        sandbox.run("true", tmp_path / "absent", QUICK)


def test_command_runs_in_the_workdir_and_its_writes_persist(sandbox, workdir):
    result = sandbox.run("pwd; echo hello > out.txt && mkdir -p sub && echo x > sub/y", workdir, QUICK)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(workdir)
    assert (workdir / "out.txt").read_text() == "hello\n" and (workdir / "sub" / "y").read_text() == "x\n"


def test_writes_outside_the_workdir_fail_and_leave_host_files_unchanged(sandbox, workdir):
    outside_dir = Path(tempfile.mkdtemp(prefix="nightshift-sandbox-test-", dir="/var/tmp"))
    try:
        outside = outside_dir / "keep.txt"
        outside.write_text("original\n")
        host_tmp = Path("/tmp") / f"nightshift-sandbox-test-{uuid.uuid4().hex}"
        command = (f"echo evil > {outside}; echo evil >> {outside}; rm -f {outside}; "
                   f"touch {outside_dir}/new; touch /usr/evil; echo private > {host_tmp} && echo tmp-ok")
        result = sandbox.run(command, workdir, QUICK)
        assert result.output.count("Read-only file system") >= 4, result.output
        assert outside.read_text() == "original\n"
        assert sorted(p.name for p in outside_dir.iterdir()) == ["keep.txt"]
        assert not Path("/usr/evil").exists()
        # /tmp inside is a private tmpfs: writable there, invisible here
        assert "tmp-ok" in result.output and not host_tmp.exists()
    finally:
        shutil.rmtree(outside_dir)


def test_network_is_unreachable_and_fails_fast(sandbox, workdir):
    script = workdir / "net.py"
    script.write_text(
        "import socket, sys, time\n"
        "for host, port in (('127.0.0.1', int(sys.argv[1])), ('1.1.1.1', 53)):\n"
        "    start = time.monotonic()\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=5).close()\n"
        "        print(host, 'connected')\n"
        "    except OSError as exc:\n"
        "        print(host, 'failed', type(exc).__name__, round(time.monotonic() - start, 2))\n")
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        server.setblocking(False)
        result = sandbox.run(f"{PY} net.py {port}", workdir, QUICK)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing from the sandbox ever arrived
    assert "connected" not in result.output
    assert "127.0.0.1 failed" in result.output and "1.1.1.1 failed" in result.output, result.output
    assert result.duration_s < 4


def test_worker_environment_does_not_leak_in(monkeypatch, workdir):
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    monkeypatch.setenv("NIGHTSHIFT_SECRET", "hunter2")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    result = BubblewrapSandbox(env={"EXTRA": "given"}).run("env", workdir, QUICK)
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "NIGHTSHIFT_SECRET" not in result.output
    assert "hf_secret" not in result.output
    assert "EXTRA=given" in result.output and "HOME=/tmp" in result.output and "PATH=" in result.output


def test_endless_command_is_killed_at_the_limit_and_leaves_no_process(sandbox, workdir):
    marker = f"nightshift-endless-{uuid.uuid4().hex}"
    command = (f"echo started; bash -c 'while true; do sleep 1; done' {marker} & "
               f"bash -c 'sleep 1000; true' {marker}")
    result = sandbox.run(command, workdir, SandboxLimits(wall_time_s=2))
    assert result.timed_out and result.exit_code is None
    assert 2 <= result.duration_s < 4
    assert "started" in result.output
    assert _marked_processes(marker) == []


def test_fork_bomb_is_contained_and_killed_within_the_limit(sandbox, workdir):
    before = _process_count()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _process_count())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        # The sleep keeps the sandbox alive while the bomb runs, so the limit, not bash's exit, ends it.
        result = sandbox.run(":(){ :|:& };:; sleep 60", workdir,
                             SandboxLimits(wall_time_s=3, max_processes=64))
    finally:
        done.set()
        watcher.join()
    assert time.monotonic() - started < 6
    assert result.timed_out or result.exit_code != 0
    assert "Resource temporarily unavailable" in result.output  # the process limit was hit
    assert peak[0] - before <= 64 + 16  # bwrap's own, and the host's unrelated churn


def test_memory_limit_stops_a_large_allocation(sandbox, workdir):
    command = (f"{PY} -c 'bytearray(64 * 2**20); print(\"small ok\")' && "
               f"{PY} -c 'bytearray(2 * 2**30); print(\"large ok\")'")
    result = sandbox.run(command, workdir, SandboxLimits(wall_time_s=30, memory_bytes=256 * 2**20))
    assert "small ok" in result.output and "large ok" not in result.output
    assert result.exit_code != 0 and "MemoryError" in result.output


def test_output_beyond_the_limit_keeps_head_and_tail_and_says_so(sandbox, workdir):
    command = "echo FIRST; head -c 100000 /dev/zero | tr '\\0' x; echo; echo LAST"
    result = sandbox.run(command, workdir, SandboxLimits(wall_time_s=30, output_bytes=1000))
    assert result.exit_code == 0
    assert result.output.startswith("FIRST") and result.output.rstrip().endswith("LAST")
    assert "bytes of output cut" in result.output and len(result.output) < 1200


def test_runs_leave_no_cgroup_behind(sandbox, workdir):
    sandbox.run("true", workdir, QUICK)
    parent = sandbox._pids_parent
    if parent is not None:  # as root; other users rely on RLIMIT_NPROC in the user namespace
        assert list(parent.glob(f"nightshift-sandbox-{os.getpid()}-*")) == []


def test_host_tmp_is_hidden_except_paths_kept_visible_read_only(workdir):
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    with tempfile.TemporaryDirectory(prefix="ns-visible-", dir="/tmp") as kept, \
            tempfile.TemporaryDirectory(prefix="ns-hidden-", dir="/tmp") as hidden:
        Path(kept, "tool").write_text("kept")
        Path(hidden, "secret").write_text("s3cr3t")
        box = BubblewrapSandbox(visible=[Path(kept)])
        read = box.run(f"cat {kept}/tool; cat {hidden}/secret", workdir, QUICK)
        write = box.run(f"echo x > {kept}/tool", workdir, QUICK)
        assert "kept" in read.output and "s3cr3t" not in read.output
        assert write.exit_code != 0 and Path(kept, "tool").read_text() == "kept"


def test_the_workers_own_python_stays_usable_by_default(sandbox, workdir):
    result = sandbox.run(f"{sys.executable} -c 'print(40 + 2)'", workdir, QUICK)
    assert result.exit_code == 0 and "42" in result.output
