"""calls.jsonl recording, replay in recorded order, resume without paying twice, key scrubbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffnas.errors import UserError
from diffnas.propose.llm import (
    CostLedger,
    LLMBackend,
    LLMBudget,
    LLMBudgetExhausted,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
    RecordingBackend,
    ReplayBackend,
    ReplayMiss,
    RetryPolicy,
    calls_path,
    make_backend,
)
from doubles import OpenAILoopback

SECRET = "sk-record-SECRET-0123456789"


def ask(text: str) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], schema={"type": "object"})


class Scripted(LLMBackend):
    """An in-process backend answering from a list (to test the wrappers alone)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.model = "scripted"
        self.endpoint = "scripted:test"

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        if not self.answers:
            raise LLMUnavailable(self.endpoint, "no more answers", 1)
        return LLMResponse(
            text=self.answers.pop(0),
            model="scripted",
            prompt_tokens=3,
            completion_tokens=2,
            cost_usd=0.01,
        )


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in calls_path(run_dir).read_text().splitlines()]


def test_replay_answers_each_key_in_recorded_order(tmp_path: Path) -> None:
    recorder = RecordingBackend(Scripted(["a1", "b1", "a2"]), tmp_path)
    recorder.complete(ask("a"))
    recorder.complete(ask("b"))
    recorder.complete(ask("a"))
    replay = ReplayBackend(tmp_path)
    assert replay.complete(ask("a")).text == "a1"
    assert replay.complete(ask("a")).text == "a2"  # the same request asked twice: 1st then 2nd
    replayed = replay.complete(ask("b"))
    assert (replayed.text, replayed.replayed, replayed.prompt_tokens) == ("b1", True, 3)
    with pytest.raises(ReplayMiss, match="no \\(more\\) recorded answers"):
        replay.complete(ask("a"))  # asked a third time
    with pytest.raises(ReplayMiss, match="was the config changed"):
        replay.complete(ask("never asked"))


def test_replay_reproduces_a_recorded_failure(tmp_path: Path) -> None:
    recorder = RecordingBackend(Scripted([]), tmp_path)
    with pytest.raises(LLMUnavailable):
        recorder.complete(ask("a"))
    with pytest.raises(LLMUnavailable, match="replayed.*no more answers"):
        ReplayBackend(tmp_path).complete(ask("a"))


def test_replay_of_a_folder_without_calls_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no recorded LLM calls"):
        ReplayBackend(tmp_path)


def test_openai_run_replays_offline_without_a_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAILoopback() as server:
        server.push_text('{"x": 1}')
        original = make_backend("openai:gpt-4o-mini", base_url=server.base_url, record_dir=tmp_path)
        first = original.complete(ask("q"))
    monkeypatch.delenv("OPENAI_API_KEY")  # and the server is gone
    again = make_backend("openai:gpt-4o-mini", replay_dir=tmp_path).complete(ask("q"))
    assert (again.text, again.prompt_tokens, again.completion_tokens) == (
        first.text,
        first.prompt_tokens,
        first.completion_tokens,
    )
    assert SECRET not in calls_path(tmp_path).read_text()


def test_resume_serves_recorded_answers_first_and_pays_only_for_new_calls(tmp_path: Path) -> None:
    first_run = RecordingBackend(Scripted(["a1", "b1"]), tmp_path)
    first_run.complete(ask("a"))
    first_run.complete(ask("b"))
    inner = Scripted(["a-new"])
    resumed = RecordingBackend(inner, tmp_path)
    assert resumed.ledger.calls == 2  # what the first run spent still counts
    assert resumed.ledger.cost_usd == pytest.approx(0.02)
    assert resumed.complete(ask("a")).text == "a1"
    assert resumed.complete(ask("b")).replayed is True
    assert inner.calls == 0  # nothing paid again
    assert resumed.complete(ask("a")).text == "a-new"  # beyond the recording: a real call
    assert inner.calls == 1
    assert [r["response"]["text"] for r in records(tmp_path)] == ["a1", "b1", "a-new"]


def test_resume_retries_requests_that_failed_before(tmp_path: Path) -> None:
    with pytest.raises(LLMUnavailable):
        RecordingBackend(Scripted([]), tmp_path).complete(ask("a"))
    resumed = RecordingBackend(Scripted(["a-ok"]), tmp_path)
    assert resumed.complete(ask("a")).text == "a-ok"


def test_resumed_budget_counts_the_earlier_spending(tmp_path: Path) -> None:
    RecordingBackend(Scripted(["a1"]), tmp_path).complete(ask("a"))
    resumed = RecordingBackend(
        Scripted(["b1"]), tmp_path, ledger=CostLedger(LLMBudget(max_tokens=5))
    )
    with pytest.raises(LLMBudgetExhausted, match="token budget exhausted: 5 of 5"):
        resumed.complete(ask("b"))


def test_record_fields_and_key_scrubbing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    backend = RecordingBackend(Scripted(["ok"]), tmp_path, secret_env_vars=["MY_LLM_KEY"])
    backend.complete(ask(f"the user pasted {SECRET} into the prompt"))
    text = calls_path(tmp_path).read_text()
    assert SECRET not in text and "[REDACTED]" in text
    (record,) = records(tmp_path)
    request = ask("x")
    assert set(record) >= {
        "key",
        "messages",
        "schema_hash",
        "response",
        "attempts",
        "errors",
        "endpoint",
    }
    assert record["schema_hash"] == request.schema_hash()
    assert record["response"]["cost_usd"] == 0.01


def test_failed_call_is_recorded_with_its_error(tmp_path: Path) -> None:
    with OpenAILoopback() as server:
        server.push_fault(status=401)
        backend = make_backend(
            "openai:m",
            base_url=server.base_url,
            record_dir=tmp_path,
            retry=RetryPolicy(max_attempts=2),
        )
        with pytest.raises(LLMUnavailable):
            backend.complete(ask("q"))
    (record,) = records(tmp_path)
    assert record["ok"] is False
    assert "HTTP 401" in record["error"] and record["attempts"] == 1
