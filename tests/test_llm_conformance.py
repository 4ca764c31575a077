"""Every backend behind `LLMBackend` honours the same contract (one short call each)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from diffnas.propose.llm import LLMBackend, LLMRequest, calls_path, make_backend
from doubles import AnthropicLoopback, OpenAILoopback

SECRET = "sk-conformance-SECRET-0123456789"


class Tiny(BaseModel):
    """The small schema every backend must answer (bounded, as the proposal schema is)."""

    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field(min_length=1, max_length=3)


REQUEST = LLMRequest(
    messages=[
        {"role": "system", "content": "You design neural networks. Answer in JSON."},
        {"role": "user", "content": "Give up to three channel widths for a small UNet."},
    ],
    schema=Tiny.model_json_schema(),
    temperature=0.0,
    max_tokens=40,
    seed=7,
)
CANNED = '{"channels": [32, 64]}'


@dataclass
class Case:
    make: Callable[[Path | None], LLMBackend]  # record_dir -> backend
    sent_headers: Callable[[], list[dict[str, str]]]  # what the endpoint saw ([] if in-process)


@pytest.fixture(params=["openai-loopback", "anthropic-loopback", "local", "replay"])
def case(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Case]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    kind = request.param
    if kind == "local":
        yield Case(lambda rec: make_backend("local", record_dir=rec, n_ctx=512), lambda: [])
        return
    loopback = AnthropicLoopback if kind == "anthropic-loopback" else OpenAILoopback
    with loopback(responder=lambda body: CANNED) as server:
        if kind == "replay":
            # Record one real (loopback) call, then answer it from the recording only.
            recorded = tmp_path / "recorded"
            make_backend(
                "openai:gpt-4o-mini", base_url=server.base_url, record_dir=recorded
            ).complete(REQUEST)
            monkeypatch.delenv("OPENAI_API_KEY")
            monkeypatch.delenv("ANTHROPIC_API_KEY")
            yield Case(
                lambda rec: make_backend("local", replay_dir=recorded, record_dir=rec), lambda: []
            )
            return
        spec = (
            "anthropic:claude-haiku-4-5" if kind == "anthropic-loopback" else "openai:gpt-4o-mini"
        )
        yield Case(
            lambda rec: make_backend(spec, base_url=server.base_url, record_dir=rec),
            lambda: server.headers,
        )


def test_returns_text_and_counts_tokens(case: Case) -> None:
    response = case.make(None).complete(REQUEST)
    assert response.text.strip()
    assert response.prompt_tokens > 0
    assert response.completion_tokens > 0
    assert response.attempts >= 1
    assert response.model


def test_answer_is_json_valid_against_the_schema(case: Case) -> None:
    response = case.make(None).complete(REQUEST)
    answer = Tiny.model_validate_json(response.text)  # raises if not JSON or not schema-valid
    assert 1 <= len(answer.channels) <= 3


def test_records_the_call_and_never_the_key(case: Case, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    backend = case.make(run_dir)
    response = backend.complete(REQUEST)
    records = [json.loads(line) for line in calls_path(run_dir).read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["ok"] is True
    assert record["key"] == REQUEST.key()
    assert record["schema_hash"] == REQUEST.schema_hash()
    assert record["messages"] == REQUEST.message_dicts()
    assert record["response"]["text"] == response.text
    assert record["response"]["prompt_tokens"] == response.prompt_tokens
    assert backend.ledger.total_tokens == response.total_tokens  # type: ignore[attr-defined]
    # The key was sent to the endpoint (where there is one) but is nowhere on disk.
    for headers in case.sent_headers():
        assert SECRET in json.dumps(headers)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()
