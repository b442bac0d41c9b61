"""Run a candidate's tests inside bubblewrap: the whole system read-only, the work directory the
only writable path, a private ``/tmp``, no network, a clean environment, and limits on time,
memory and processes.

Where each limit is enforced, and why there:

- Wall time: by the parent, which SIGKILLs bwrap at the deadline. The sandbox has its own pid
  namespace and bwrap runs with ``--die-with-parent``, so the death of bwrap's init takes every
  process inside with it (the kernel empties a pid namespace whose init dies).
- Memory: ``RLIMIT_AS`` per process, set by a wrapper shell inside the sandbox.
- Processes: ``RLIMIT_NPROC`` does not bind a task whose real uid is the host's root, not even
  inside a user namespace under another uid (measured here: 30 forks succeed under a limit of
  10). So when we run as root, each run gets its own cgroup in the ``pids`` controller, whose
  ``pids.max`` binds root too; a root without a writable ``pids`` cgroup cannot contain a fork
  bomb, and the constructor refuses. As any other user, ``RLIMIT_NPROC`` set *inside* bwrap's
  user namespace counts only that namespace's processes (per-namespace counts, Linux >= 5.14;
  measured: 8 forks under a limit of 10 while the same uid had 20 processes outside), so it
  is a per-run limit there. Both count threads as well as processes.

The command runs as uid 65534 in a user namespace: it holds no capabilities, so it cannot
remount the read-only system even when the worker is root; that uid maps to the worker's own,
so the files it writes in the work directory belong to the worker.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from jobs.errors import RepositoryError, SandboxUnavailableError

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install bubblewrap"
SANDBOX_UID = 65534  # nobody
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# bwrap's own processes inside the limit: its monitor and the pid namespace's init.
BWRAP_PROCESSES = 2
# Inside bwrap: set the limits (hard and soft, so the command cannot raise them), then run the
# command with bash -c. Arguments: $1 address space in KiB, $2 processes, $3 the command. A
# ulimit fails only under a lower hard limit inherited from the worker, which then holds.
LIMITS_SCRIPT = 'ulimit -v "$1"; ulimit -u "$2"; ulimit -c 0; exec "$BASH" -c "$3"'
CGROUP_JOIN_FAILED = "nightshift-sandbox: cannot join the run's cgroup"
DRAIN_AFTER_KILL_S = 1.0


@dataclass(frozen=True)
class SandboxLimits:
    wall_time_s: float = 600.0
    memory_bytes: int = 4 * 2**30  # address-space limit per process
    max_processes: int = 256  # processes and threads of the command together
    output_bytes: int = 256 * 1024  # keep the head and tail of the output beyond this

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "memory_bytes", "max_processes", "output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed
    timed_out: bool
    output: str  # stdout and stderr merged, cut to about output_bytes (the text says so)
    duration_s: float


@runtime_checkable
class Sandbox(Protocol):
    def run(self, command: str, workdir: Path, limits: SandboxLimits) -> SandboxResult:
        """Run ``command`` with ``bash -c`` in ``workdir``, the only path it may write."""
        ...


class BubblewrapSandbox:
    """The ``Sandbox`` on bubblewrap. See the module docstring for how each limit holds."""

    def __init__(self, bwrap: str = "bwrap", env: Mapping[str, str] | None = None,
                 visible: Sequence[Path] | None = None) -> None:
        # The private /tmp hides whatever the host keeps there; paths in ``visible`` (by default
        # the worker's own Python environment, which may live in a checkout under /tmp) are
        # bound back read-only so a test command can still use them.
        self.visible = sorted({Path(p).resolve() for p in (visible if visible is not None
                                                            else (sys.prefix, sys.base_prefix))})
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxUnavailableError(
                f"bubblewrap ({bwrap!r}) is not installed or not on PATH; install it with: {INSTALL_HINT}")
        self.bwrap = found
        # By absolute path: the caller's env may set a PATH without it.
        self.bash = shutil.which("bash") or "/bin/bash"
        self.env = dict(env or {})
        self._pids_parent = _find_pids_parent() if os.geteuid() == 0 else None
        if os.geteuid() == 0 and self._pids_parent is None:
            raise SandboxUnavailableError(
                "running as root without a writable cgroup 'pids' controller: the sandbox could not "
                "limit processes (RLIMIT_NPROC does not bind root); run the worker as a non-root "
                "user, or give it a writable cgroup with the pids controller")
        self._check_namespaces()

    def run(self, command: str, workdir: Path, limits: SandboxLimits) -> SandboxResult:
        workdir = Path(workdir).resolve()
        if not workdir.is_dir():
            raise RepositoryError("workdir", f"{workdir} is not a directory")
        cgroup = _RunCgroup.create(self._pids_parent, limits.max_processes) if self._pids_parent else None
        argv = self._argv(command, workdir, limits)
        try:
            return self._execute(cgroup.joining(argv) if cgroup else argv, limits, cgroup)
        finally:
            if cgroup:
                cgroup.remove()

    def _execute(self, argv: list[str], limits: SandboxLimits, cgroup: _RunCgroup | None) -> SandboxResult:
        started = time.monotonic()
        output = _OutputBuffer(limits.output_bytes)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=self._environment(),
                                    start_new_session=True)
        except OSError as exc:
            raise SandboxUnavailableError(f"cannot start bubblewrap ({self.bwrap}): {exc}") from exc
        with proc:
            try:
                timed_out = not _finish(proc, started + limits.wall_time_s, output)
            finally:
                if proc.returncode is None:  # past the deadline, or interrupted: nothing outlives us
                    _kill(proc, output)
                if cgroup:
                    cgroup.kill()  # the pid namespace's teardown leaves nothing; this makes sure
        text = output.text()
        if cgroup and proc.returncode == 125 and CGROUP_JOIN_FAILED in text[:2000]:
            raise SandboxUnavailableError(f"the sandbox could not join its cgroup: {text[:500]}")
        exit_code = None if timed_out or proc.returncode < 0 else proc.returncode
        return SandboxResult(exit_code, timed_out, text, time.monotonic() - started)

    def _argv(self, command: str, workdir: Path, limits: SandboxLimits) -> list[str]:
        wd = str(workdir)
        return [
            self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            *[arg for p in self.visible if p.is_relative_to("/tmp") for arg in ("--ro-bind", str(p), str(p))],
            "--bind", wd, wd, "--chdir", wd,
            *self._namespace_flags(),
            "--", self.bash, "-c", LIMITS_SCRIPT, "nightshift-sandbox",
            str(limits.memory_bytes // 1024), str(limits.max_processes + BWRAP_PROCESSES), command,
        ]

    @staticmethod
    def _namespace_flags() -> list[str]:
        # The network namespace has only its own loopback: the host's is out of reach.
        return ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--die-with-parent", "--new-session"]

    def _environment(self) -> dict[str, str]:
        # Built from nothing, so the worker's secrets (NIGHTSHIFT_*, tokens) never get in.
        return {"PATH": BASE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **self.env}

    def _check_namespaces(self) -> None:
        # Namespaces can be refused (a container's seccomp profile, AppArmor's userns policy):
        # better to learn it here, once, than as a failing test run of every candidate.
        argv = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                *self._namespace_flags(), "--", "true"]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                                  env=self._environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailableError(f"bubblewrap ({self.bwrap}) does not start: {exc}") from exc
        if done.returncode != 0:
            raise SandboxUnavailableError(
                f"bubblewrap cannot create its namespaces here (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}")


def _finish(proc: subprocess.Popen, deadline: float, output: _OutputBuffer) -> bool:
    """Read output until EOF and wait for the exit; False when the deadline comes first."""
    if not _read(proc, deadline, output):
        return False
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _read(proc: subprocess.Popen, deadline: float, output: _OutputBuffer) -> bool:
    """Read the merged output until EOF (True) or the deadline (False), never blocking past it."""
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return True
            output.add(chunk)
    return False


def _kill(proc: subprocess.Popen, output: _OutputBuffer) -> None:
    """SIGKILL bwrap's process group; its init follows (--die-with-parent) and with it the
    whole pid namespace. Then keep what was still in the pipe: the last lines say where it hung."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    _read(proc, time.monotonic() + DRAIN_AFTER_KILL_S, output)


class _OutputBuffer:
    """Keeps the first and the last half of ``limit`` bytes and counts what fell between."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - (self.limit - self.limit // 2)
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        head, tail = self.head.decode(errors="replace"), self.tail.decode(errors="replace")
        if not self.dropped:
            return head + tail
        return (f"{head}\n[... nightshift sandbox: {self.dropped} bytes of output cut here; the first "
                f"and last {self.limit // 2} bytes are kept ...]\n{tail}")


@dataclass(frozen=True)
class _RunCgroup:
    """One run's cgroup in the ``pids`` controller (v1 or v2): ``pids.max`` caps its tasks."""

    path: Path

    @classmethod
    def create(cls, parent: Path, max_processes: int) -> _RunCgroup:
        path = parent / f"nightshift-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes + BWRAP_PROCESSES))
        except OSError as exc:
            cls(path).remove()
            raise SandboxUnavailableError(f"cannot create the sandbox's cgroup {path}: {exc}") from exc
        return cls(path)

    def joining(self, argv: list[str]) -> list[str]:
        """``argv`` behind a shell that first moves itself into this cgroup: what it then
        execs, and everything that forks, stays inside, with no window before the limit holds."""
        script = f'echo $$ > "$1" || {{ echo "{CGROUP_JOIN_FAILED}" >&2; exit 125; }}; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "nightshift-sandbox", str(self.path / "cgroup.procs"), *argv]

    def kill(self) -> None:
        deadline = time.monotonic() + 5
        while (pids := self._pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self) -> None:
        # rmdir fails while killed tasks are still being reaped; an empty leftover is harmless.
        deadline = time.monotonic() + 5
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError as exc:
                if time.monotonic() > deadline:
                    log.warning("cannot remove the sandbox cgroup %s: %s", self.path, exc)
                    return
                time.sleep(0.05)

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []


def _find_pids_parent() -> Path | None:
    """The first cgroup directory where we may create a child with a ``pids.max``: ours in the
    pids hierarchy, else that hierarchy's root. Probed by creating and removing a child."""
    for parent in _pids_candidates():
        probe = parent / f"nightshift-sandbox-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        usable = (probe / "pids.max").exists()
        probe.rmdir()
        if usable:
            return parent
    return None


def _pids_candidates() -> list[Path]:
    own = _own_cgroups()
    found: list[Path] = []
    for fstype, mount, options in _cgroup_mounts():
        if fstype == "cgroup" and "pids" in options:
            found += [mount / own.get("pids", "").lstrip("/"), mount]
        elif fstype == "cgroup2" and "pids" in _words(mount / "cgroup.controllers"):
            # v2 puts a controller in a child only where the parent enables it for its subtree.
            found += [p for p in (mount / own.get("", "").lstrip("/"), mount)
                      if "pids" in _words(p / "cgroup.subtree_control")]
    return [p for i, p in enumerate(found) if p.is_dir() and p not in found[:i]]


def _own_cgroups() -> dict[str, str]:
    """Controller name -> our cgroup path in its hierarchy ("" names the v2 hierarchy)."""
    own: dict[str, str] = {}
    for line in _read_text(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    return own


def _cgroup_mounts() -> list[tuple[str, Path, set[str]]]:
    mounts = []
    for line in _read_text(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        fields, extra = before.split(), after.split()
        if len(fields) > 4 and len(extra) > 2 and extra[0] in ("cgroup", "cgroup2"):
            mounts.append((extra[0], Path(fields[4]), set(extra[2].split(","))))
    return mounts


def _words(path: Path) -> list[str]:
    return _read_text(path).split()


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
