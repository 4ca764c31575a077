"""Fault handling against real HTTP (loopback servers) through the real openai/anthropic SDKs."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffnas.propose.llm import (
    LLMBudget,
    LLMBudgetExhausted,
    LLMRequest,
    LLMUnavailable,
    RetryPolicy,
    calls_path,
    make_backend,
)
from doubles import (
    AnthropicLoopback,
    KeyEchoingAnthropic,
    KeyEchoingOpenAI,
    OpenAILoopback,
    Reply,
)

SECRET = "sk-faults-SECRET-0123456789"
POLICY = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=10.0, jitter=0.5)
REQUEST = LLMRequest(
    messages=[{"role": "user", "content": "propose an architecture"}], max_tokens=50
)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)


@pytest.fixture(params=["openai", "anthropic"])
def server(request: pytest.FixtureRequest) -> Iterator[OpenAILoopback | AnthropicLoopback]:
    loopback = OpenAILoopback if request.param == "openai" else AnthropicLoopback
    with loopback() as running:
        yield running


def backend_for(server: OpenAILoopback | AnthropicLoopback, sleeps: list[float], **kwargs):
    spec = (
        "openai:gpt-4o-mini" if isinstance(server, OpenAILoopback) else "anthropic:claude-haiku-4-5"
    )
    kwargs.setdefault("retry", POLICY)
    return make_backend(spec, base_url=server.base_url, sleep=sleeps.append, **kwargs)


def test_429_retry_after_is_honoured_and_retried(server) -> None:
    sleeps: list[float] = []
    server.push_fault(status=429, retry_after=7)
    server.push_json({"ok": True})
    response = backend_for(server, sleeps).complete(REQUEST)
    assert response.text == '{"ok": true}'
    assert response.attempts == 2
    assert sleeps == [7.0]  # the server's wait, not our backoff
    assert "429" in response.errors[0]
    assert len(server.requests) == 2


def test_500_is_retried_with_jittered_exponential_backoff(server) -> None:
    sleeps: list[float] = []
    server.push_fault(status=500)
    server.push_fault(status=503)
    server.push_text("ok")
    response = backend_for(server, sleeps).complete(REQUEST)
    assert (response.text, response.attempts) == ("ok", 3)
    assert 0.5 <= sleeps[0] <= 0.75  # base * (1 + jitter * U)
    assert 1.0 <= sleeps[1] <= 1.5  # doubled
    assert ["500" in response.errors[0], "503" in response.errors[1]] == [True, True]


def test_timeout_is_retried(server) -> None:
    sleeps: list[float] = []
    server.push_fault(delay=2.0)  # outlasts the client's 0.2 s timeout
    server.push_text("ok")
    response = backend_for(server, sleeps, timeout_s=0.2).complete(REQUEST)
    assert (response.text, response.attempts) == ("ok", 2)
    assert "timed out" in response.errors[0].lower()


def test_broken_json_body_is_retried(server) -> None:
    sleeps: list[float] = []
    server.push_fault(broken_json=True)
    server.push_text("ok")
    response = backend_for(server, sleeps).complete(REQUEST)
    assert (response.text, response.attempts) == ("ok", 2)


def test_client_errors_other_than_429_are_not_retried(server) -> None:
    sleeps: list[float] = []
    server.push_fault(status=400)
    server.push_text("never reached")
    with pytest.raises(LLMUnavailable, match="HTTP 400") as caught:
        backend_for(server, sleeps).complete(REQUEST)
    assert caught.value.attempts == 1
    assert sleeps == []
    assert len(server.requests) == 1


def test_dead_backend_raises_one_clear_error_and_records_it(server, tmp_path: Path) -> None:
    sleeps: list[float] = []
    for _ in range(POLICY.max_attempts):
        server.push_fault(status=500)
    backend = backend_for(server, sleeps, record_dir=tmp_path)
    with pytest.raises(LLMUnavailable) as caught:
        backend.complete(REQUEST)
    error = caught.value
    assert server.url in str(error)  # says which endpoint
    assert "HTTP 500" in str(error)  # and the last error
    assert error.attempts == POLICY.max_attempts == len(server.requests)
    assert len(sleeps) == POLICY.max_attempts - 1
    (record,) = [json.loads(line) for line in calls_path(tmp_path).read_text().splitlines()]
    assert record["ok"] is False and record["response"] is None
    assert record["attempts"] == POLICY.max_attempts and len(record["errors"]) == 3
    assert SECRET not in calls_path(tmp_path).read_text()


def test_connection_refused_is_retried_then_unavailable() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    backend = make_backend(
        "openai:gpt-4o-mini",
        base_url=f"http://127.0.0.1:{port}/v1",
        retry=POLICY,
        sleep=sleeps.append,
    )
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}") as caught:
        backend.complete(REQUEST)
    assert caught.value.attempts == 3 and len(sleeps) == 2
    assert "APIConnectionError" in caught.value.last_error


def test_bugs_are_not_disguised_as_unavailability(server) -> None:
    """A non-transport exception (here from the script) propagates instead of failing a round."""
    backend = backend_for(server, [])
    backend._client = None  # type: ignore[attr-defined]  # any call now raises AttributeError
    with pytest.raises(AttributeError):
        backend.complete(REQUEST)


def test_token_budget_stops_before_the_call_that_would_start_over_it(server, tmp_path) -> None:
    server.push_text("one two three")
    server.push_text("never asked")
    backend = backend_for(server, [], record_dir=tmp_path, budget=LLMBudget(max_tokens=5))
    first = backend.complete(REQUEST)
    assert first.total_tokens >= 5
    with pytest.raises(LLMBudgetExhausted, match="token budget"):
        backend.complete(REQUEST)
    assert len(server.requests) == 1  # the refused call never reached the endpoint
    assert server.pending == 1


def test_usd_budget_uses_the_price_table(server) -> None:
    server.push_text("x", prompt_tokens=1_000_000, completion_tokens=0)
    backend = backend_for(
        server,
        [],
        budget=LLMBudget(max_usd=1.0),
        prices={"gpt-4o-mini": (2.0, 0.0), "claude-haiku-4-5": (2.0, 0.0)},
    )
    assert backend.complete(REQUEST).cost_usd == pytest.approx(2.0)
    with pytest.raises(LLMBudgetExhausted, match=r"\$2\.0000 of \$1\.0000"):
        backend.complete(REQUEST)


@pytest.mark.parametrize("loopback", [KeyEchoingOpenAI, KeyEchoingAnthropic])
def test_a_key_echoed_in_an_error_body_is_redacted_at_the_source(loopback, tmp_path) -> None:
    with loopback() as server:
        server.push_fault(status=401)
        backend = backend_for(server, [], record_dir=tmp_path)
        with pytest.raises(LLMUnavailable, match="HTTP 401") as caught:
            backend.complete(REQUEST)
    assert SECRET in json.dumps(server.headers)  # it was sent, and echoed
    error = caught.value
    texts = [str(error), error.last_error, *error.errors, *traceback.format_exception(error)]
    assert "invalid credential" in error.last_error and "[REDACTED]" in error.last_error
    for text in texts:  # the exception chain does not carry the SDK's unredacted error either
        assert SECRET[:12] not in text
    assert SECRET[:12] not in calls_path(tmp_path).read_text()


# ----- structured output: what an OpenAI-compatible server takes -----
SCHEMA = {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]}
SCHEMA_REQUEST = REQUEST.model_copy(update={"json_schema": SCHEMA})
LLAMA_CPP_500 = (  # llama_cpp.server's answer to OpenAI's json_schema response format
    "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\"}"
)


def llama_cpp_like(body: dict) -> Reply:
    """Refuses `json_schema` with HTTP 500 as llama_cpp.server does; takes the rest."""
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return Reply(text=LLAMA_CPP_500, status=500)
    return Reply(text='{"k": 1}')


def test_auto_steps_down_once_without_spending_retries() -> None:
    from diffnas.propose.llm.openai_backend import OpenAIBackend

    notices: list[str] = []
    with OpenAILoopback(responder=llama_cpp_like) as server:
        backend = OpenAIBackend(
            "m", base_url=server.base_url, retry=POLICY, sleep=[].append, notify=notices.append
        )
        first = backend.complete(SCHEMA_REQUEST)
        second = backend.complete(SCHEMA_REQUEST)
        bodies = list(server.requests)
    assert first.text == second.text == '{"k": 1}'
    assert [b.get("response_format", {}).get("type") for b in bodies] == [
        "json_schema", "json_object", "json_object",
    ]  # fmt: skip
    assert bodies[1]["response_format"]["schema"] == SCHEMA  # llama.cpp's own form
    assert first.attempts == 1 and "HTTP 500" in first.errors[0] and second.errors == []
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "refused structured output json_schema" in notices[0] and "schema_object" in notices[0]


def test_auto_goes_down_to_text_and_a_plain_5xx_is_still_retried() -> None:
    from diffnas.propose.llm.openai_backend import OpenAIBackend

    def refuses_every_format(body: dict) -> Reply:
        if "response_format" in body:
            return Reply(text="response_format is not supported", status=400)
        return Reply(text='{"k": 2}')

    with OpenAILoopback(responder=refuses_every_format) as server:
        server.push_fault(status=503)  # unavailable: a fault, retried after a backoff
        sleeps: list[float] = []
        backend = OpenAIBackend(
            "m", base_url=server.base_url, retry=POLICY, sleep=sleeps.append, notify=[].append
        )
        response = backend.complete(SCHEMA_REQUEST)
        bodies = list(server.requests)
    assert backend.structured == "text" and response.text == '{"k": 2}'
    assert len(sleeps) == 1  # only the 503 waited; the refusals stepped down at once
    assert "JSON Schema" in bodies[-1]["messages"][0]["content"]  # the schema in the prompt


def test_an_explicit_mode_is_kept_and_its_refusal_names_auto() -> None:
    from diffnas.propose.llm.openai_backend import OpenAIBackend

    with OpenAILoopback(responder=llama_cpp_like) as server:
        backend = OpenAIBackend(
            "m", base_url=server.base_url, structured="json_schema", retry=POLICY,
            sleep=[].append,
        )  # fmt: skip
        with pytest.raises(LLMUnavailable, match="--structured auto") as err:
            backend.complete(SCHEMA_REQUEST)
        guided = OpenAIBackend(
            "m", base_url=server.base_url, structured="guided_json", retry=POLICY
        )
        guided.complete(SCHEMA_REQUEST)
        body = server.last_request
    assert err.value.attempts == 1
    assert body["guided_json"] == SCHEMA and "response_format" not in body  # vLLM's field
