"""Batches in the OpenAI Batch format: parse and validate the input file, run it through an
``Engine``, and write each result as an OpenAI batch output line.

Input: one JSON object per line with ``custom_id``, ``method`` (POST), ``url``
(``/v1/chat/completions`` or ``/v1/completions``) and ``body``. A bad line is rejected on its
own, with a message naming the line; the other lines still run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobs.engine import Engine, GenerationRequest, GenerationResult, SamplingSpec
from jobs.errors import BatchFileError

BATCH_KIND = "batch"
CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
SUPPORTED_URLS = (CHAT_URL, COMPLETIONS_URL)


# --- the input line -------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # the batch's --model decides; this is accepted and ignored
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: Literal[False] = False
    user: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _n_needs_sampling(self) -> _Body:
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0 (greedy decoding gives n equal answers)")
        return self

    def sampling(self) -> SamplingSpec:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingSpec(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_max(self) -> ChatBody:
        self.max_tokens = self.max_completion_tokens or self.max_tokens
        return self


class CompletionBody(_Body):
    prompt: str = Field(min_length=1)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/completions"]
    body: dict[str, Any]


@dataclass(frozen=True)
class BatchRequest:
    """A validated input line; ``body`` is the JSON object as received."""

    line_no: int
    custom_id: str
    url: str
    body: dict[str, Any]

    def to_generation(self) -> GenerationRequest:
        if self.url == CHAT_URL:
            chat = ChatBody.model_validate(self.body)
            messages = tuple(m.model_dump(exclude_none=True) for m in chat.messages)
            return GenerationRequest(self.custom_id, chat.sampling(), messages=messages)
        completion = CompletionBody.model_validate(self.body)
        return GenerationRequest(self.custom_id, completion.sampling(), prompt=completion.prompt)


@dataclass(frozen=True)
class LineError:
    line_no: int
    custom_id: str | None
    code: str
    message: str


@dataclass(frozen=True)
class ParsedBatch:
    requests: tuple[BatchRequest, ...]
    rejected: tuple[LineError, ...]
    line_count: int


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "line"
        got = err.get("input")
        shown = json.dumps(got)[:80] if not isinstance(got, dict) else "{...}"
        parts.append(f"{where}: {err['msg']} (received {shown})")
    return "; ".join(parts)


def _check_line(line_no: int, text: str, max_model_len: int) -> BatchRequest | LineError:
    where = f"line {line_no}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return LineError(line_no, None, "invalid_json", f"{where}: not valid JSON ({exc.msg} at "
                         f"column {exc.colno}); each line must be one JSON object")
    if not isinstance(obj, dict):
        return LineError(line_no, None, "invalid_json",
                         f"{where}: expected a JSON object, received {type(obj).__name__}")
    custom_id = obj.get("custom_id") if isinstance(obj.get("custom_id"), str) else None
    if custom_id is None:
        return LineError(line_no, None, "missing_custom_id", f"{where}: custom_id is missing or "
                         "not a string; every line needs a unique custom_id")
    if obj.get("url") not in SUPPORTED_URLS:
        return LineError(line_no, custom_id, "unsupported_url", f"{where}: url "
                         f"{obj.get('url')!r} is not supported; use one of {', '.join(SUPPORTED_URLS)}")
    try:
        line = _Line.model_validate(obj)
        body_model = ChatBody if line.url == CHAT_URL else CompletionBody
        body = body_model.model_validate(line.body)
    except ValidationError as exc:
        return LineError(line_no, custom_id, "invalid_request", f"{where}: {_describe(exc)}")
    if body.max_tokens is not None and body.max_tokens >= max_model_len:
        return LineError(line_no, custom_id, "max_tokens_too_large", f"{where}: body.max_tokens "
                         f"is {body.max_tokens}, but the model holds {max_model_len} tokens for "
                         f"prompt and output together; use at most {max_model_len - 1}")
    return BatchRequest(line_no, custom_id, line.url, line.body)


def parse_batch(data: bytes, *, max_model_len: int, max_lines: int) -> ParsedBatch:
    """Validate a whole batch file. Raises ``BatchFileError`` only when the file as a whole is
    unusable; each bad line becomes a ``LineError`` and the rest are kept."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchFileError("file", f"not UTF-8 text (byte {exc.start} is {data[exc.start]:#x})")
    numbered = [(no, ln) for no, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not numbered:
        raise BatchFileError("file", "the file is empty; a batch needs at least one JSON line")
    if len(numbered) > max_lines:
        raise BatchFileError("file", f"{len(numbered)} request lines; the limit is {max_lines}. "
                             "Split the file into several batches.")
    requests: list[BatchRequest] = []
    rejected: list[LineError] = []
    first_seen: dict[str, int] = {}
    for line_no, line in numbered:
        checked = _check_line(line_no, line, max_model_len)
        if isinstance(checked, BatchRequest) and checked.custom_id in first_seen:
            checked = LineError(line_no, checked.custom_id, "duplicate_custom_id",
                                f"line {line_no}: custom_id {checked.custom_id!r} was already "
                                f"used on line {first_seen[checked.custom_id]}; custom_ids must "
                                "be unique within a batch")
        if isinstance(checked, BatchRequest):
            first_seen[checked.custom_id] = line_no
            requests.append(checked)
        else:
            rejected.append(checked)
    return ParsedBatch(tuple(requests), tuple(rejected), len(numbered))


# --- output lines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputLine:
    """One line of the batch output (or errors) file, ready to be stored."""

    line_no: int
    custom_id: str | None
    ok: bool
    payload: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _line_id(batch_id: str, line_no: int, prefix: str) -> str:
    # Stable across redeliveries, so a rerun writes the very same line.
    return prefix + hashlib.sha256(f"{batch_id}:{line_no}".encode()).hexdigest()[:24]


def error_line(batch_id: str, err: LineError) -> OutputLine:
    payload = {
        "id": _line_id(batch_id, err.line_no, "batch_req_"),
        "custom_id": err.custom_id,
        "response": None,
        "error": {"code": err.code, "message": err.message},
    }
    return OutputLine(err.line_no, err.custom_id, False, payload)


def _response_body(
    batch_id: str, req: BatchRequest, res: GenerationResult, model: str, created: int
) -> dict:
    usage = {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
             "total_tokens": res.prompt_tokens + res.completion_tokens}
    if req.url == CHAT_URL:
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(res.choices)]
        kind = "chat.completion"
    else:
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(res.choices)]
        kind = "text_completion"
    return {"id": _line_id(batch_id, req.line_no, "cmpl-"), "object": kind, "created": created,
            "model": model, "choices": choices, "usage": usage}


def result_line(batch_id: str, req: BatchRequest, res: GenerationResult, model: str) -> OutputLine:
    if res.error is not None:
        return error_line(batch_id, LineError(req.line_no, req.custom_id, "engine_rejected",
                                              f"line {req.line_no}: {res.error}"))
    request_id = _line_id(batch_id, req.line_no, "req_")
    payload = {
        "id": _line_id(batch_id, req.line_no, "batch_req_"),
        "custom_id": req.custom_id,
        "response": {"status_code": 200, "request_id": request_id,
                     "body": _response_body(batch_id, req, res, model, int(time.time()))},
        "error": None,
    }
    return OutputLine(req.line_no, req.custom_id, True, payload, res.prompt_tokens,
                      res.completion_tokens)


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSummary:
    succeeded: int
    failed: int
    prompt_tokens: int
    completion_tokens: int


def _chunks(results: Iterable[OutputLine], flush_s: float) -> Iterator[list[OutputLine]]:
    buffer: list[OutputLine] = []
    last = time.monotonic()
    for line in results:
        buffer.append(line)
        if time.monotonic() - last >= flush_s:
            yield buffer
            buffer, last = [], time.monotonic()
    if buffer:
        yield buffer


def run_batch(
    engine: Engine,
    requests: Sequence[BatchRequest],
    *,
    batch_id: str,
    model: str,
    save: Callable[[list[OutputLine]], None],
    flush_s: float = 1.0,
) -> BatchSummary:
    """Send every request to the engine at once and ``save`` output lines as they finish, in
    groups at most ``flush_s`` apart, so a task killed midway keeps what it finished."""
    by_id = {r.custom_id: r for r in requests}
    generations = engine.generate([r.to_generation() for r in requests])
    lines = (result_line(batch_id, by_id[res.request_id], res, model) for res in generations)
    ok = failed = tokens_in = tokens_out = 0
    for chunk in _chunks(lines, flush_s):
        save(chunk)
        for line in chunk:
            ok, failed = ok + line.ok, failed + (not line.ok)
            tokens_in += line.prompt_tokens
            tokens_out += line.completion_tokens
    return BatchSummary(ok, failed, tokens_in, tokens_out)
