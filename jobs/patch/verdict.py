"""Choosing the best candidate and naming the item's verdict.

Order: fewest newly failing tests, then most of the item's target tests passing, then
agreement between candidates (the same normalised diff proposed more than once), then the
smaller diff.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.patch.diffs import normalise_diff
from jobs.patch.state import Candidate, TestSummary


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    chosen: int | None


def target_tests(baseline: TestSummary, item_text: str) -> set[str]:
    """The failing tests the item asks to fix: those it names, else every failing test."""
    failing = set(baseline.failed)
    words = set(re.findall(r"\w+", item_text.lower()))
    named = {t for t in failing if re.split(r"[:/.\[]", t.lower())[-1] in words
             or t.lower().rsplit("::", 1)[-1].split("[")[0] in words}
    return named or failing


def passes(cand: Candidate, targets: Sequence[str]) -> bool:
    return (cand.applied and cand.tests is not None and not cand.tests.timed_out
            and not cand.newly_failing and set(cand.fixed_targets) >= set(targets))


def choose(candidates: Sequence[Candidate], targets: Sequence[str], stop_reason: str | None) -> Verdict:
    applied = [c for c in candidates if c.applied and c.tests is not None]
    if not applied:
        problems = next((c.problems[0] for c in candidates if c.problems), "no candidate was produced")
        return _or_stop(Verdict("failed", f"no applicable edit ({problems})", None), stop_reason)
    agreement = Counter(normalise_diff(c.diff) for c in applied)
    best = min(applied, key=lambda c: (len(c.newly_failing), -len(c.fixed_targets),
                                       -agreement[normalise_diff(c.diff)], len(c.diff), c.index))
    if best.tests.timed_out:
        return _or_stop(Verdict("timed out", "the tests of every applicable candidate ran past "
                                "their time limit", best.index), stop_reason)
    if best.newly_failing:
        return _or_stop(Verdict("failed", "every applicable candidate breaks other tests "
                                f"(the best breaks {', '.join(best.newly_failing[:5])})", best.index), stop_reason)
    if set(best.fixed_targets) >= set(targets):
        what = f"{len(targets)} failing test(s) now pass" if targets else "the tests pass"
        return Verdict("fixed", f"{what}; no test newly fails", best.index)
    if best.fixed_targets:
        return Verdict("partial", f"{len(best.fixed_targets)} of {len(targets)} target tests now pass; "
                       "no test newly fails", best.index)
    return _or_stop(Verdict("failed", "no candidate made the failing tests pass", best.index), stop_reason)


def _or_stop(verdict: Verdict, stop_reason: str | None) -> Verdict:
    """A loop ended by a limit is reported as that limit, not as a plain failure."""
    if not stop_reason:
        return verdict
    name, _, reason = stop_reason.partition(": ")
    return Verdict(name, f"{reason}; best so far: {verdict.reason}", verdict.chosen)
