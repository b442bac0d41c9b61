"""The worker side of the night: run a task only while its window is open and the owner is
away, and get out of the way between engine steps when either changes.

``run_guarded`` wraps a task body. Before each round it waits for its turn (window open, the
yield policy says run). During the round the engine is wrapped so the guard is consulted
between engine steps (vLLM) or results; a batch then stops early with every finished line
saved, a patch loop stops at its next step (its state is saved after each step). Then:

- the owner came back: the GPU is freed (engine sleep on CUDA, shut down on the CPU build),
  the worker shows ``suspended`` with the reason, and the round restarts when idle again,
  running only what is still unfinished;
- the window closed, or the owner stayed too long: the task is given back to the queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jobs import Engine, GenerationRequest, GenerationResult
from scheduler.models import WorkerState
from scheduler.settings import YieldSpec
from workers.probes import Probe
from workers.yielding import Action, Phase, YieldPolicy, observe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    kind: str  # "window" (closed: give the task back) or "owner" (suspend, or give back)
    reason: str


class Interrupted(Exception):
    """Control flow, not an error: the guard stopped a patch loop between its steps."""


class Guard:
    """One per worker process: the probes, the policy of the current task and the window."""

    def __init__(self, spec: YieldSpec, probes: Sequence[Probe], window_open: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.probes, self.window_open = spec, list(probes), window_open
        self._clock, self._sleep = clock, sleep
        self.policy = YieldPolicy(spec, clock())
        self.stop: Stop | None = None
        self._polled_at = -math.inf

    def begin(self) -> None:
        """A new task: a fresh policy (it must see the owner idle before it starts)."""
        self.policy = YieldPolicy(self.spec, self._clock())
        self.stop, self._polled_at = None, -math.inf

    def check(self) -> Stop | None:
        """Between steps: should the running task stop? Probes are read at most every poll_s."""
        now = self._clock()
        if self.stop is not None or now - self._polled_at < self.spec.poll_s:
            return self.stop
        self._polled_at = now
        if not self.window_open():
            self.stop = Stop("window", "the night window closed")
        else:
            decision = self.policy.decide(observe(self.probes), now)
            if decision.action is Action.SUSPEND:
                self.stop = Stop("owner", decision.reason)
        return self.stop

    def wait_for_turn(self, show: Callable[[WorkerState, str], None]) -> Stop | None:
        """Block until the task may run (None), or say why it must be given back."""
        self.stop = None
        while True:
            if not self.window_open():
                return Stop("window", "the night window closed")
            decision = self.policy.decide(observe(self.probes), self._clock())
            if decision.action is Action.RUN:
                self._polled_at = self._clock()
                return None
            if decision.action is Action.GIVE_UP:
                return Stop("owner", decision.reason)
            suspended = self.policy.phase is Phase.SUSPENDED
            show(WorkerState.SUSPENDED if suspended else WorkerState.OWNER_ACTIVE, decision.reason)
            self._sleep(self.spec.poll_s)

    def idle_state(self) -> tuple[WorkerState, str | None]:
        """What an idle worker shows: outside its window, the owner at the machine, or idle."""
        if not self.window_open():
            return WorkerState.OUTSIDE_WINDOW, "no night window is open"
        obs = observe(self.probes)
        if obs.active:
            return WorkerState.OWNER_ACTIVE, "; ".join(obs.reasons)
        return WorkerState.IDLE, None


class GuardedEngine:
    """An engine that consults the guard between steps. A batch (``raise_mid_call`` False)
    just ends early, so the caller saves what finished; a patch loop gets ``Interrupted``."""

    def __init__(self, inner: Engine, guard: Guard, raise_mid_call: bool) -> None:
        self.inner, self.guard, self.raise_mid_call = inner, guard, raise_mid_call
        self.model_name = inner.model_name
        self.max_model_len = inner.max_model_len
        self.interrupted = False

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[GenerationResult]:
        if self.guard.check() is not None:
            self.interrupted = True
            raise Interrupted(self.guard.stop.reason)
        steps = hasattr(self.inner, "should_stop")  # vLLM: checked between engine steps
        if steps:
            self.inner.should_stop = lambda: self.guard.check() is not None
        done = 0
        try:
            for result in self.inner.generate(requests):
                done += 1
                yield result
                if done < len(requests) and self.guard.check() is not None:
                    break
        finally:
            if steps:
                self.inner.should_stop = None
        if done < len(requests) and self.guard.stop is not None:
            self.interrupted = True
            if self.raise_mid_call:
                raise Interrupted(self.guard.stop.reason)


@dataclass(frozen=True)
class Released:
    """The task went back to the queue, unfinished, for this reason."""

    reason: str


Round = Callable[[Engine], Any]  # runs the body once on an engine; returns its outcome


def run_guarded(guard: Guard, load: Callable[[], Engine], body: Round, *, raise_mid_call: bool,
                show: Callable[[WorkerState, str | None], None], free_gpu: Callable[[], str],
                merge: Callable[[Any, Any], Any]) -> Any:
    """Run ``body`` in rounds until it finishes uninterrupted (its merged outcome is
    returned) or the task must be given back (``Released``)."""
    guard.begin()
    total, freed = None, ""

    def waiting(state: WorkerState, reason: str | None) -> None:  # keep saying the GPU is free
        show(state, f"{reason}; {freed}" if freed and state is WorkerState.SUSPENDED else reason)

    while True:
        stop = guard.wait_for_turn(waiting)
        if stop is not None:
            free_gpu()
            return Released(stop.reason)
        engine = GuardedEngine(load(), guard, raise_mid_call)
        freed = ""
        show(WorkerState.WORKING, None)
        try:
            outcome = body(engine)
        except Interrupted:
            outcome = None
        total = outcome if total is None else merge(total, outcome) if outcome is not None else total
        if not engine.interrupted:
            return total
        stop = guard.stop
        if stop.kind == "window":
            free_gpu()
            return Released(stop.reason)
        freed = free_gpu()
        log.warning("suspended: %s (%s)", stop.reason, freed)
        show(WorkerState.SUSPENDED, f"{stop.reason}; {freed}")
