"""Running a night in-process with a scripted engine: the real worker task bodies, the real
database and sandbox, with ``jobs.FakeEngine`` where vLLM would be (vLLM itself is tested in
tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs import FakeEngine, InvalidInputError
from jobs.patch.sandbox import BubblewrapSandbox
from scheduler import Settings
from workers import Presence, WorkerContext, run_patch_task


@dataclass
class ScriptedHolder:
    """Stands in for workers.engine.EngineHolder."""

    engine: FakeEngine = field(default_factory=FakeEngine)
    unknown: bool = False
    released: int = 0

    @property
    def resident_model(self):
        return self.engine.model_name

    def engine_for(self, alias):
        if self.unknown:
            raise InvalidInputError("model", f"this worker has no model {alias!r}")
        return self.engine

    def release(self):
        self.released += 1


def run_patch_night(settings: Settings, task_ids, script) -> None:
    """Run each TODO item's task body, as a worker would overnight, with scripted answers."""
    ctx = WorkerContext(settings=settings, holder=ScriptedHolder(FakeEngine(script=script)),
                        presence=Presence(settings), sandbox_factory=BubblewrapSandbox)
    for task_id in task_ids:
        run_patch_task(ctx, task_id)
