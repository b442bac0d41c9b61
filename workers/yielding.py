"""When a worker may use the GPU, in the manner of HTCondor's START/SUSPEND/CONTINUE/VACATE
expressions and BOINC's "suspend while the computer is in use".

One ``YieldPolicy`` per task, fed probe readings and the time (a monotonic clock, passed in):

- it starts only once the owner has been idle for ``start_idle_s``;
- it suspends when the owner has been active for ``grace_s`` without a break (a single mouse
  bump is not the owner coming back);
- it resumes only after ``resume_idle_s`` of quiet (hysteresis: longer than the grace, so a
  returning owner does not make it flap);
- it gives the task back after ``max_suspend_s`` waiting or suspended, so another worker can
  take it.

Pure: no probes, clocks or engines inside, so it is tested with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from scheduler.settings import YieldSpec
from workers.probes import Probe, Reading


@dataclass(frozen=True)
class Observation:
    """All probes at one moment: the owner is active if any probe says so."""

    active: bool
    idle_s: float | None  # the shortest idle time any probe knows
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, readings: Iterable[Reading]) -> Observation:
        readings = list(readings)
        active = [f"{r.probe}: {r.detail}" for r in readings if r.active]
        idles = [r.idle_s for r in readings if r.idle_s is not None]
        return cls(bool(active), min(idles) if idles else None, tuple(active))


def observe(probes: Iterable[Probe]) -> Observation:
    return Observation.of(p.read() for p in probes)


class Phase(StrEnum):
    WAITING = "waiting"  # not started: the owner has not been idle long enough
    RUNNING = "running"
    SUSPENDED = "suspended"


class Action(StrEnum):
    RUN = "run"
    WAIT = "wait"
    SUSPEND = "suspend"
    GIVE_UP = "give-up"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


class YieldPolicy:
    def __init__(self, spec: YieldSpec, now: float) -> None:
        self.spec = spec
        self.phase = Phase.WAITING
        self._phase_since = now
        self._last_active: float | None = None
        self._active_since: float | None = None

    def decide(self, obs: Observation, now: float) -> Decision:
        self._note(obs, now)
        if self.phase is Phase.RUNNING:
            return self._while_running(obs, now)
        needed = self.spec.start_idle_s if self.phase is Phase.WAITING else self.spec.resume_idle_s
        quiet = self.quiet_s(obs, now)
        if not obs.active and quiet >= needed:
            self._enter(Phase.RUNNING, now)
            return Decision(Action.RUN, f"owner idle for {_secs(quiet)}")
        if now - self._phase_since >= self.spec.max_suspend_s:
            return Decision(Action.GIVE_UP, f"the owner kept the machine busy for "
                            f"{_secs(now - self._phase_since)} (max_suspend_s {self.spec.max_suspend_s:g})")
        why = "; ".join(obs.reasons) or f"owner idle for {_secs(quiet)}, waiting for {_secs(needed)}"
        return Decision(Action.WAIT, why)

    def quiet_s(self, obs: Observation, now: float) -> float:
        """How long the owner has been idle, from what was seen and what the probes know.
        Never seen active and no probe knowing idle time (a headless server): idle."""
        if obs.active:
            return 0.0
        known = [now - self._last_active] if self._last_active is not None else []
        if obs.idle_s is not None:
            known.append(obs.idle_s)
        return min(known) if known else math.inf

    def _while_running(self, obs: Observation, now: float) -> Decision:
        if obs.active and now - self._active_since >= self.spec.grace_s:
            self._enter(Phase.SUSPENDED, now)
            return Decision(Action.SUSPEND, "; ".join(obs.reasons))
        return Decision(Action.RUN)

    def _note(self, obs: Observation, now: float) -> None:
        if obs.active:
            self._last_active = now
            if self._active_since is None:
                self._active_since = now
        else:
            self._active_since = None

    def _enter(self, phase: Phase, now: float) -> None:
        self.phase, self._phase_since = phase, now


def _secs(value: float) -> str:
    return "ever" if math.isinf(value) else f"{value:.0f} s"
