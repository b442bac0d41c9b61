"""Probes: is the machine's owner using it (or its GPU) right now?

Every probe answers through one method, ``read() -> Reading``: whether the owner is active
(``None`` when the probe cannot tell here: no GPU driver, no logind, no X display) and, where
known, how long the owner has been idle. A probe that cannot work on this machine answers
"unknown"; it never raises. ``workers.yielding`` turns readings into decisions.

Kinds (setting ``yield_policy.probes``): ``nvml`` (GPU processes that are not ours),
``logind`` (session idle hints), ``x11`` (input idle time via xprintidle), ``programs``
(configured programs that claim the GPU), ``load`` (1-minute CPU load), ``file`` (the owner
is active while a file exists: a seam for scripts, and the tests' simulated owner).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from scheduler.settings import YieldSpec

Runner = Callable[[Sequence[str]], tuple[int, str]]


def run_command(args: Sequence[str]) -> tuple[int, str]:
    """Run a short command; a missing program or a hang reads as failure, never an exception."""
    if shutil.which(args[0]) is None:
        return 127, f"{args[0]} is not installed"
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


@dataclass(frozen=True)
class Reading:
    probe: str
    active: bool | None  # None: this probe cannot tell on this machine
    idle_s: float | None = None  # seconds since the owner's last input, where known
    detail: str = ""


class Probe(Protocol):
    name: str

    def read(self) -> Reading: ...


# --- NVML -------------------------------------------------------------------------------------


class NvmlDevice:
    """One GPU through NVML (``nvidia-ml-py``, imported here only). Raises ``RuntimeError``
    at construction when there is no driver or no such GPU."""

    def __init__(self, index: int = 0) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise RuntimeError("nvidia-ml-py is not installed: pip install 'nightshift[gpu]'") from exc
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as exc:
            raise RuntimeError(f"NVML unavailable: {exc}") from exc

    def _ask(self, fn: str, *args):
        try:
            return getattr(self._nvml, fn)(self.handle, *args)
        except self._nvml.NVMLError:  # not supported on this card, or a transient driver error
            return None

    def utilisation_pct(self) -> int | None:
        rates = self._ask("nvmlDeviceGetUtilizationRates")
        return rates.gpu if rates is not None else None

    def memory_used_bytes(self) -> int | None:
        mem = self._ask("nvmlDeviceGetMemoryInfo")
        return mem.used if mem is not None else None

    def process_ids(self) -> set[int]:
        pids: set[int] = set()
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            pids |= {p.pid for p in self._ask(fn) or ()}
        return pids

    def energy_mj(self) -> int | None:
        """Total energy since the driver loaded, in millijoules (Volta and later)."""
        return self._ask("nvmlDeviceGetTotalEnergyConsumption")

    def power_mw(self) -> int | None:
        return self._ask("nvmlDeviceGetPowerUsage")


def own_pids(root: Path = Path("/proc"), me: int | None = None) -> set[int]:
    """This process and its descendants (vLLM's engine processes)."""
    parents: dict[int, int] = {}
    for stat in root.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        parents[int(stat.parent.name)] = int(fields[1])
    ours, frontier = set(), {me or os.getpid()}
    while frontier:
        ours |= frontier
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - ours
    return ours


class NvmlProbe:
    """The owner is using the GPU when a process that is not ours holds it."""

    name = "nvml"

    def __init__(self, index: int = 0, device: Callable[[int], NvmlDevice] = NvmlDevice,
                 ours: Callable[[], set[int]] = own_pids) -> None:
        self._open, self._index, self._ours = device, index, ours
        self._device: NvmlDevice | None = None
        self._unavailable: str | None = None

    def device(self) -> NvmlDevice | None:
        if self._device is None and self._unavailable is None:
            try:
                self._device = self._open(self._index)
            except RuntimeError as exc:
                self._unavailable = str(exc)
        return self._device

    def read(self) -> Reading:
        device = self.device()
        if device is None:
            return Reading(self.name, None, detail=self._unavailable or "")
        foreign = sorted(device.process_ids() - self._ours())
        util = device.utilisation_pct()
        detail = f"GPU {self._index}: {util if util is not None else '?'}% busy"
        if foreign:
            detail += f", used by other processes {foreign[:5]}"
        return Reading(self.name, bool(foreign), detail=detail)


# --- user presence ------------------------------------------------------------------------------


class LogindProbe:
    """systemd-logind's idle hint of each user session (``loginctl show-session``)."""

    name = "logind"

    def __init__(self, run: Runner = run_command, clock: Callable[[], float] = time.time) -> None:
        self._run, self._clock = run, clock

    def read(self) -> Reading:
        rc, out = self._run(["loginctl", "list-sessions", "--no-legend"])
        if rc != 0:
            return Reading(self.name, None, detail=f"loginctl unavailable: {out.strip()[:120]}")
        sessions = [line.split()[0] for line in out.splitlines() if line.strip()]
        active, idle_since = [], []
        for sid in sessions:
            props = self._properties(sid)
            if props.get("Class") != "user" or props.get("Active") != "yes":
                continue
            if props.get("IdleHint") == "no":
                active.append(sid)
            elif props.get("IdleSinceHint", "0").isdigit() and int(props["IdleSinceHint"]) > 0:
                idle_since.append(int(props["IdleSinceHint"]) / 1e6)
        if active:
            return Reading(self.name, True, 0.0, f"session {', '.join(active)} in use")
        idle_s = self._clock() - max(idle_since) if idle_since else None
        return Reading(self.name, False, idle_s, f"{len(sessions)} session(s), none in use")

    def _properties(self, sid: str) -> dict[str, str]:
        rc, out = self._run(["loginctl", "show-session", sid, "-p", "IdleHint", "-p",
                             "IdleSinceHint", "-p", "Active", "-p", "Class"])
        if rc != 0:
            return {}
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class X11IdleProbe:
    """Time since the last keyboard or mouse input on the X display (``xprintidle``)."""

    name = "x11"

    def __init__(self, active_within_s: float = 60.0, run: Runner = run_command,
                 display: str | None = None) -> None:
        self._run, self._within = run, active_within_s
        self._display = display if display is not None else os.environ.get("DISPLAY", "")

    def read(self) -> Reading:
        if not self._display:
            return Reading(self.name, None, detail="no X display (DISPLAY is not set)")
        rc, out = self._run(["xprintidle"])
        if rc != 0 or not out.strip().isdigit():
            return Reading(self.name, None, detail=f"xprintidle unavailable: {out.strip()[:120]}")
        idle_s = int(out.strip()) / 1000
        return Reading(self.name, idle_s < self._within, idle_s, f"last input {idle_s:.0f} s ago")


# --- programs, load, file -----------------------------------------------------------------------


class ProgramsProbe:
    """Programs that claim the GPU (games, editors) are running: scans /proc."""

    name = "programs"

    def __init__(self, programs: Iterable[str], root: Path = Path("/proc")) -> None:
        self._names = {p.lower() for p in programs}
        self._root = root

    def read(self) -> Reading:
        if not self._names:
            return Reading(self.name, False, detail="no programs configured")
        found = []
        for comm in self._root.glob("[0-9]*/comm"):
            try:
                name = comm.read_text().strip().lower()
            except OSError:  # the process ended while we looked
                continue
            if name in self._names:
                found.append(f"{name} (pid {comm.parent.name})")
        return Reading(self.name, bool(found), detail=", ".join(sorted(found)[:5]) or "none running")


class LoadProbe:
    """The 1-minute load average above ``max_load`` counts as the owner working."""

    name = "load"

    def __init__(self, max_load: float, loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg) -> None:
        self._max, self._loadavg = max_load, loadavg

    def read(self) -> Reading:
        load = self._loadavg()[0]
        return Reading(self.name, load > self._max, detail=f"load {load:.2f} (limit {self._max:g})")


class FileProbe:
    """The owner is active while ``path`` exists (touch it from a script, remove it later)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Reading:
        present = self.path.exists()
        return Reading(self.name, present, detail=f"{self.path} {'exists' if present else 'absent'}")


def make_probes(spec: YieldSpec) -> list[Probe]:
    """The probes named in ``yield_policy.probes`` (already validated in the settings)."""
    makers: dict[str, Callable[[], Probe]] = {
        "nvml": lambda: NvmlProbe(spec.gpu_index),
        "logind": LogindProbe,
        "x11": X11IdleProbe,
        "programs": lambda: ProgramsProbe(spec.programs),
        "load": lambda: LoadProbe(spec.max_load),
        "file": lambda: FileProbe(Path(spec.presence_file).expanduser()),
    }
    return [makers[kind]() for kind in spec.probes]
