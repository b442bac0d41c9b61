"""The yield policy on plain numbers: start after idle, grace, hysteresis, giving up."""

import math

from scheduler.settings import YieldSpec
from workers.probes import Reading
from workers.yielding import Action, Observation, Phase, YieldPolicy

SPEC = YieldSpec(start_idle_s=60, grace_s=10, resume_idle_s=30, max_suspend_s=300)
ACTIVE = Observation(True, 0.0, ("x11: typing",))
QUIET = Observation(False, None, ())


def run_until(policy, obs, start, end, step=1.0):
    t, last = start, None
    while t <= end:
        last = policy.decide(obs, t)
        if last.action is not Action.WAIT and last.action is not Action.RUN:
            return t, last
        t += step
    return t, last


def test_a_headless_machine_with_no_presence_signal_starts_at_once():
    policy = YieldPolicy(SPEC, now=0)
    assert policy.decide(QUIET, 0).action is Action.RUN


def test_it_starts_only_after_the_owner_was_idle_long_enough():
    policy = YieldPolicy(SPEC, now=0)
    assert policy.decide(Observation(False, 20.0, ()), 0).action is Action.WAIT
    assert policy.decide(Observation(False, 59.0, ()), 39).action is Action.WAIT
    assert policy.decide(Observation(False, 60.0, ()), 40).action is Action.RUN


def test_an_active_owner_blocks_the_start_even_with_no_idle_minimum():
    policy = YieldPolicy(SPEC.model_copy(update={"start_idle_s": 0}), now=0)
    assert policy.decide(ACTIVE, 0).action is Action.WAIT
    assert policy.decide(QUIET, 1).action is Action.RUN


def test_owner_seen_active_counts_from_that_moment():
    policy = YieldPolicy(SPEC, now=0)
    decision = policy.decide(ACTIVE, 0)
    assert decision.action is Action.WAIT and "typing" in decision.reason
    assert policy.decide(QUIET, 59).action is Action.WAIT
    assert policy.decide(QUIET, 60).action is Action.RUN


def test_a_short_blip_within_the_grace_period_does_not_suspend():
    policy = YieldPolicy(SPEC, now=0)
    policy.decide(QUIET, 0)
    assert policy.decide(ACTIVE, 100).action is Action.RUN
    assert policy.decide(ACTIVE, 109).action is Action.RUN
    assert policy.decide(QUIET, 110).action is Action.RUN  # the owner left again
    assert policy.decide(ACTIVE, 111).action is Action.RUN  # grace restarts
    decision = policy.decide(ACTIVE, 121)
    assert decision.action is Action.SUSPEND and decision.reason == "x11: typing"
    assert policy.phase is Phase.SUSPENDED


def test_resume_needs_the_longer_quiet_period():
    policy = YieldPolicy(SPEC, now=0)
    policy.decide(QUIET, 0)
    policy.decide(ACTIVE, 0)
    assert policy.decide(ACTIVE, 10).action is Action.SUSPEND
    assert policy.decide(QUIET, 25).action is Action.WAIT  # 15 s quiet: more than grace, less than resume
    assert policy.decide(QUIET, 39).action is Action.WAIT
    assert policy.decide(QUIET, 40).action is Action.RUN
    assert policy.phase is Phase.RUNNING


def test_gives_up_after_the_maximum_suspension():
    policy = YieldPolicy(SPEC, now=0)
    policy.decide(QUIET, 0)
    policy.decide(ACTIVE, 0)
    policy.decide(ACTIVE, 10)
    t, decision = run_until(policy, ACTIVE, 11, 1000)
    assert decision.action is Action.GIVE_UP and t == 310
    assert "max_suspend_s 300" in decision.reason


def test_waiting_to_start_also_gives_up():
    policy = YieldPolicy(SPEC, now=0)
    t, decision = run_until(policy, ACTIVE, 0, 1000)
    assert decision.action is Action.GIVE_UP and t == 300


def test_observation_takes_any_active_probe_and_the_shortest_idle():
    obs = Observation.of([Reading("nvml", None, detail="no driver"),
                          Reading("logind", False, 500.0), Reading("x11", False, 90.0),
                          Reading("programs", True, detail="steam (pid 4)")])
    assert obs.active and obs.idle_s == 90.0 and obs.reasons == ("programs: steam (pid 4)",)
    assert YieldPolicy(SPEC, 0).quiet_s(Observation(False, None, ()), 0) == math.inf
