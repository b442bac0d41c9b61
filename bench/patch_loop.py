"""Where an item's night goes in the patch loop: model time, test time, and overhead (git
worktrees, parsing, applying, checkpoints), with a scripted engine on the sample repository.

Also counts engine calls: all of an item's candidates must come from one batched call per
round, and all of a round's critiques from one more. Writes bench/results/patch_loop.json
(key ``engine_calls_per_round``: the most generate calls any round made; the target is 1).

    .venv/bin/python bench/patch_loop.py [--candidates 4] [--rounds 2] [--model-latency-s 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import FakeEngine  # noqa: E402
from jobs.patch import BubblewrapSandbox, PatchItem, PatchLimits, PatchLoop  # noqa: E402
from jobs.patch.repo import git  # noqa: E402
from tests.jobs.patch_sample import (BREAKS_MUL, FIXED, TEST_COMMAND, make_sample_repo,  # noqa: E402
                                     script, whole_file)

# Each item: a title and the edit its candidates propose per round.
ITEMS = [
    ("Fix add so that test_add passes", [whole_file(FIXED)]),
    ("Make add correct without breaking mul", [whole_file(BREAKS_MUL), whole_file(FIXED)]),
    ("Repair the add function", ["I would rewrite add to use plus.", whole_file(FIXED)]),
    ("Fix test_add", [whole_file(BREAKS_MUL)]),
]


@dataclass
class CountingEngine(FakeEngine):
    """The scripted engine, optionally sleeping per call as a stand-in for model latency."""

    latency_s: float = 0.0
    generate_calls: dict[int, int] = field(default_factory=dict)

    def generate(self, requests):
        gen_rounds = {int(r.request_id.split("-")[1]) for r in requests if r.request_id.startswith("gen-")}
        for round_ in gen_rounds:
            self.generate_calls[round_] = self.generate_calls.get(round_, 0) + 1
        if self.latency_s:
            time.sleep(self.latency_s)
        yield from super().generate(requests)


def run_item(repo: Path, workspace: Path, title: str, edits: list[str], args) -> dict:
    engine = CountingEngine(script=script(*edits), latency_s=args.model_latency_s)
    item = PatchItem(repo=repo, base=git(repo, "rev-parse", "HEAD").strip(), title=title, body="",
                     slug=title.lower().replace(" ", "-")[:40], test_command=TEST_COMMAND, date="bench")
    limits = PatchLimits(rounds=args.rounds, candidates=args.candidates)
    started = time.monotonic()
    state = PatchLoop(engine, BubblewrapSandbox(), item, workspace=workspace, limits=limits).run()
    wall = time.monotonic() - started
    return {"title": title, "verdict": state.verdict, "rounds": state.round,
            "candidates": len(state.candidates), "engine_calls": state.engine_calls,
            "generate_calls_per_round": engine.generate_calls, "wall_s": wall,
            "model_s": state.model_s, "tests_s": state.tests_s,
            "overhead_s": wall - state.model_s - state.tests_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-latency-s", type=float, default=0.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "patch_loop.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nightshift-patch-bench-") as tmp:
        repo = make_sample_repo(Path(tmp) / "repo")
        items = [run_item(repo, Path(tmp) / f"ws-{i}", title, edits, args)
                 for i, (title, edits) in enumerate(ITEMS)]
    totals = {k: sum(i[k] for i in items) for k in ("wall_s", "model_s", "tests_s", "overhead_s")}
    per_round = [n for i in items for n in i["generate_calls_per_round"].values()]
    result = {
        "engine_calls_per_round": max(per_round),
        "engine_calls_per_item_median": statistics.median(i["engine_calls"] for i in items),
        "share_model": totals["model_s"] / totals["wall_s"],
        "share_tests": totals["tests_s"] / totals["wall_s"],
        "share_overhead": totals["overhead_s"] / totals["wall_s"],
        "totals_s": totals, "items": items,
        "candidates": args.candidates, "rounds": args.rounds, "model_latency_s": args.model_latency_s,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for i in items:
        print(f"{i['title'][:40]:40} {i['verdict']:10} rounds {i['rounds']} calls {i['engine_calls']} "
              f"wall {i['wall_s']:.2f}s model {i['model_s']:.3f}s tests {i['tests_s']:.2f}s "
              f"overhead {i['overhead_s']:.2f}s")
    print(f"shares: model {result['share_model']:.1%}, tests {result['share_tests']:.1%}, "
          f"overhead {result['share_overhead']:.1%}; engine calls per round: {result['engine_calls_per_round']}")
    return 0 if result["engine_calls_per_round"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
