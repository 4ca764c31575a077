"""make_backend: spec parsing, keys from the environment only, and what each backend sends."""

from __future__ import annotations

import json

import pytest

from diffnas.errors import UserError
from diffnas.propose.llm import LLMBudget, LLMRequest, RecordingBackend, make_backend, parse_spec
from doubles import AnthropicLoopback, OpenAILoopback

SCHEMA = {
    "type": "object",
    "properties": {"widths": {"type": "array", "items": {"type": "integer"}, "maxItems": 4}},
    "required": ["widths"],
}
REQUEST = LLMRequest(
    messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}],
    schema=SCHEMA,
    temperature=0.3,
    max_tokens=77,
    seed=5,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", ("local", "")),
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("anthropic:claude-haiku-4-5", ("anthropic", "claude-haiku-4-5")),
        ("openai:org/model:tag", ("openai", "org/model:tag")),
        ("replay:runs/00001-search", ("replay", "runs/00001-search")),
    ],
)
def test_parse_spec(spec: str, expected: tuple[str, str]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "gpt-4o", "openai", "openai:", "local:x", "mistral:large"])
def test_bad_spec_names_the_allowed_forms(spec: str) -> None:
    with pytest.raises(UserError, match="'local', 'openai:MODEL', 'anthropic:MODEL'") as caught:
        make_backend(spec)
    assert caught.value.field == "llm"


def test_missing_key_says_which_variable(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        make_backend("openai:gpt-4o-mini")
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY"):
        make_backend("anthropic:claude-haiku-4-5")
    with pytest.raises(UserError, match="AZURE_KEY"):
        make_backend("anthropic:claude-haiku-4-5", api_key_env="AZURE_KEY")


def test_custom_key_variable_is_sent_and_a_self_hosted_server_needs_none(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("VLLM_KEY", "vllm-secret-123456")
    with OpenAILoopback() as server:
        server.push_text("a")
        server.push_text("b")
        make_backend("openai:m", base_url=server.base_url, api_key_env="VLLM_KEY").complete(REQUEST)
        make_backend("openai:m", base_url=server.base_url).complete(REQUEST)  # no key at all
    assert server.headers[0]["authorization"] == "Bearer vllm-secret-123456"
    assert "vllm-secret" not in server.headers[1].get("authorization", "")


def test_usd_budget_needs_a_price(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k" * 20)
    with pytest.raises(UserError, match="no price") as caught:
        make_backend(
            "openai:my-finetune", base_url="http://127.0.0.1:9/v1", budget=LLMBudget(max_usd=1)
        )
    assert caught.value.field == "budget.max_usd"
    priced = make_backend(
        "openai:my-finetune",
        base_url="http://127.0.0.1:9/v1",
        budget=LLMBudget(max_usd=1),
        prices={"my-finetune": (1.0, 2.0)},
    )
    assert isinstance(priced, RecordingBackend)


def test_bad_structured_mode(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k" * 20)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k" * 20)
    with pytest.raises(UserError, match="structured='xml'"):
        make_backend("openai:m", structured="xml")
    with pytest.raises(UserError, match="structured='json_object'"):
        make_backend("anthropic:m", structured="json_object")


def sent_to_openai(monkeypatch, structured: str) -> dict:
    monkeypatch.setenv("OPENAI_API_KEY", "k" * 20)
    with OpenAILoopback() as server:
        server.push_text("{}")
        make_backend("openai:m", base_url=server.base_url, structured=structured).complete(REQUEST)
    return server.requests[0]


def test_openai_json_schema_mode(monkeypatch) -> None:
    body = sent_to_openai(monkeypatch, "json_schema")
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["messages"] == REQUEST.message_dicts()
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (77, 0.3, 5)


def test_openai_json_object_fallback_puts_the_schema_in_the_prompt(monkeypatch) -> None:
    body = sent_to_openai(monkeypatch, "json_object")
    assert body["response_format"] == {"type": "json_object"}
    assert json.dumps(SCHEMA, sort_keys=True) in body["messages"][0]["content"]


def test_openai_text_fallback_sends_no_response_format(monkeypatch) -> None:
    body = sent_to_openai(monkeypatch, "text")
    assert "response_format" not in body
    assert "JSON Schema" in body["messages"][0]["content"]


@pytest.mark.parametrize("structured", ["json_schema", "text"])
def test_anthropic_request_shape(monkeypatch, structured: str) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k" * 20)
    with AnthropicLoopback() as server:
        server.push_text("{}")
        make_backend("anthropic:m", base_url=server.base_url, structured=structured).complete(
            REQUEST
        )
    body = server.requests[0]
    assert body["messages"] == [{"role": "user", "content": "go"}]  # system goes apart
    assert body["max_tokens"] == 77
    if structured == "json_schema":
        sent = body["output_config"]["format"]
        assert sent["type"] == "json_schema"
        assert sent["schema"]["properties"]["widths"]["type"] == "array"
        assert body["system"] == "sys"
    else:
        assert "output_config" not in body
        assert body["system"].startswith("sys") and "JSON Schema" in body["system"]
