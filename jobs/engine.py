"""The seam between workload logic and the model: the ``Engine`` protocol and its values.

Every job kind calls an ``Engine``. Workers adapt vLLM to it; tests use ``FakeEngine``.
An engine receives *all* the requests a job has at once and yields results as each finishes,
so the real engine can batch them continuously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingSpec:
    max_tokens: int | None = None  # None: up to the model's context length
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """Exactly one of ``prompt`` (raw completion) and ``messages`` (chat) is set."""

    request_id: str
    sampling: SamplingSpec
    prompt: str | None = None
    messages: tuple[dict[str, object], ...] | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a GenerationRequest needs exactly one of prompt and messages")


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one request. ``error`` is set when the engine refused this request
    alone (prompt too long, bad sampling values); the other requests are unaffected."""

    request_id: str
    choices: tuple[Choice, ...] = ()
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


@runtime_checkable
class Engine(Protocol):
    model_name: str
    max_model_len: int

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[GenerationResult]:
        """Run all ``requests`` together; yield one result per request, in finishing order."""
        ...


@dataclass
class FakeEngine:
    """A deterministic engine for tests: the reply is scripted per request id, or echoes the
    prompt's words. It records every call so tests can check how requests were batched."""

    model_name: str = "fake"
    max_model_len: int = 4096
    replies: dict[str, str] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    fail_after: int | None = None  # raise EngineError after this many results (a crash)
    script: Callable[[GenerationRequest], Sequence[str]] | None = None  # one text per choice
    calls: list[list[str]] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[GenerationResult]:
        from jobs.errors import EngineError

        self.calls.append([r.request_id for r in requests])
        for done, req in enumerate(requests):
            if self.fail_after is not None and done >= self.fail_after:
                raise EngineError(f"fake engine crashed after {done} results")
            if req.request_id in self.refuse:
                yield GenerationResult(req.request_id, error=self.refuse[req.request_id])
                continue
            yield self._answer(req)

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        if self.script is not None:
            texts = list(self.script(req))
            choices = tuple(Choice(t, "stop", len(t.split())) for t in texts)
            return GenerationResult(req.request_id, choices=choices, prompt_tokens=10)
        source = req.prompt if req.prompt is not None else str(req.messages[-1].get("content"))
        words = self.replies.get(req.request_id, f"echo: {source}").split()
        limit = req.sampling.max_tokens or len(words)
        finish = "length" if len(words) > limit else "stop"
        text = " ".join(words[:limit])
        choice = Choice(text=text, finish_reason=finish, completion_tokens=min(len(words), limit))
        return GenerationResult(
            req.request_id, choices=(choice,) * req.sampling.n, prompt_tokens=len(source.split())
        )
