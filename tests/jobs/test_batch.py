import json

import pytest

from jobs import BatchFileError, FakeEngine, parse_batch, run_batch
from jobs.batch import BatchRequest
from tests.conftest import batch_line


def _file(*lines) -> bytes:
    return "\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines).encode()


def _parse(data: bytes, max_model_len: int = 1024):
    return parse_batch(data, max_model_len=max_model_len, max_lines=100)


def test_valid_chat_and_completion_lines_are_accepted_in_order():
    parsed = _parse(_file(
        batch_line("a"),
        {"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}},
    ))
    assert [r.custom_id for r in parsed.requests] == ["a", "b"]
    assert parsed.rejected == ()


def test_malformed_json_line_is_rejected_alone_with_its_line_number():
    parsed = _parse(_file(batch_line("a"), "{not json", batch_line("c")))
    assert [r.custom_id for r in parsed.requests] == ["a", "c"]
    (err,) = parsed.rejected
    assert err.line_no == 2 and err.code == "invalid_json"
    assert "line 2" in err.message and "column" in err.message


def test_missing_custom_id_names_the_line():
    line = batch_line("x")
    del line["custom_id"]
    (err,) = _parse(_file(line)).rejected
    assert err.code == "missing_custom_id" and err.message.startswith("line 1:")


def test_duplicate_custom_id_names_both_lines():
    parsed = _parse(_file(batch_line("a"), batch_line("b"), batch_line("a")))
    assert [r.line_no for r in parsed.requests] == [1, 2]
    (err,) = parsed.rejected
    assert err.code == "duplicate_custom_id"
    assert "line 3" in err.message and "line 1" in err.message


def test_unsupported_url_lists_the_allowed_ones():
    line = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    (err,) = _parse(_file(line)).rejected
    assert err.code == "unsupported_url"
    assert "/v1/embeddings" in err.message and "/v1/chat/completions" in err.message


def test_max_tokens_beyond_model_length_says_the_limit():
    (err,) = _parse(_file(batch_line("a", max_tokens=5000)), max_model_len=1024).rejected
    assert err.code == "max_tokens_too_large"
    assert "5000" in err.message and "1023" in err.message


def test_max_completion_tokens_counts_like_max_tokens():
    (err,) = _parse(_file(batch_line("a", max_completion_tokens=4096))).rejected
    assert err.code == "max_tokens_too_large"


@pytest.mark.parametrize("body, words", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2, "temperature": 0}, "greedy"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
])
def test_invalid_body_fields_are_named(body, words):
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    (err,) = _parse(_file(line)).rejected
    assert err.code == "invalid_request" and words in err.message


def test_empty_file_is_refused_as_a_whole():
    with pytest.raises(BatchFileError, match="empty"):
        _parse(b"\n  \n")


def test_too_many_lines_is_refused_with_the_limit():
    with pytest.raises(BatchFileError, match="limit is 2"):
        parse_batch(_file(batch_line("a"), batch_line("b"), batch_line("c")), max_model_len=64, max_lines=2)


def test_non_utf8_file_is_refused():
    with pytest.raises(BatchFileError, match="UTF-8"):
        _parse(b"\xff\xfe\x00")


def test_run_batch_sends_every_request_in_one_engine_call_and_saves_all_lines():
    requests = _parse(_file(*[batch_line(f"r{i}", f"word {i}") for i in range(50)])).requests
    engine, saved = FakeEngine(), []
    summary = run_batch(engine, requests, batch_id="t1", model="m", save=saved.extend, flush_s=0)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 50
    assert sorted(l.custom_id for l in saved) == sorted(f"r{i}" for i in range(50))
    assert summary.succeeded == 50 and summary.failed == 0


def test_output_line_follows_the_openai_batch_format():
    (req,) = _parse(_file(batch_line("a", "one two three", max_tokens=2))).requests
    saved = []
    run_batch(FakeEngine(), [req], batch_id="t1", model="tiny", save=saved.extend)
    line = saved[0].payload
    assert line["custom_id"] == "a" and line["error"] is None
    assert line["id"].startswith("batch_req_")
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: one"}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_line_ids_are_stable_across_reruns():
    (req,) = _parse(_file(batch_line("a"))).requests
    first, second = [], []
    run_batch(FakeEngine(), [req], batch_id="t9", model="m", save=first.extend)
    run_batch(FakeEngine(), [req], batch_id="t9", model="m", save=second.extend)
    assert first[0].payload["id"] == second[0].payload["id"]


def test_engine_refusing_one_request_fails_that_line_only():
    requests = _parse(_file(batch_line("a"), batch_line("b"))).requests
    saved = []
    summary = run_batch(FakeEngine(refuse={"b": "prompt is 2000 tokens; the model allows 1024"}),
                        requests, batch_id="t", model="m", save=saved.extend)
    by_id = {l.custom_id: l for l in saved}
    assert by_id["a"].ok and not by_id["b"].ok
    assert "2000 tokens" in by_id["b"].payload["error"]["message"]
    assert "line 2" in by_id["b"].payload["error"]["message"]
    assert summary.succeeded == 1 and summary.failed == 1


def test_completion_request_maps_to_a_prompt():
    req = BatchRequest(1, "c", "/v1/completions", {"prompt": "def f():", "max_tokens": 3, "stop": "\n"})
    gen = req.to_generation()
    assert gen.prompt == "def f():" and gen.messages is None
    assert gen.sampling.max_tokens == 3 and gen.sampling.stop == ("\n",)
