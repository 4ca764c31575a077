"""The LLM proposer's repair loop, against the real openai SDK and a scripted loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from diffnas.gate.memory import TrialRecord
from diffnas.propose.llm import LLMBudget, LLMBudgetExhausted, LLMUnavailable, make_backend
from diffnas.propose.llm_proposer import LLMProposer
from doubles import OpenAILoopback
from test_propose_conformance import (
    FRESH,
    KEY_ENV,
    SPACE,
    make_ctx,
    make_memory,
    openai_backend,
    valid_arch,
    wanted,
)

OVER_BUDGET = valid_arch(
    base_channels=48, channel_mult=[2, 3, 3], num_res_blocks=2, head_channels=16
)


def answer(*archs: dict[str, Any]) -> dict[str, Any]:
    return {"candidates": [{"rationale": f"idea {i}", "arch": a} for i, a in enumerate(archs)]}


@pytest.fixture(scope="module")
def memory() -> list[TrialRecord]:
    return make_memory(6)


@pytest.fixture
def server(monkeypatch) -> Iterator[OpenAILoopback]:
    monkeypatch.setenv(KEY_ENV, "sk-propose-test-0123456789")
    with OpenAILoopback() as running:
        yield running


def proposer(server: OpenAILoopback, **kwargs: Any) -> LLMProposer:
    return LLMProposer(openai_backend(server), **kwargs)


def repair_turn(body: dict[str, Any]) -> tuple[str, str]:
    """(assistant text, user repair text) of a repair request."""
    *_, assistant, user = body["messages"]
    assert assistant["role"] == "assistant" and user["role"] == "user"
    return assistant["content"], user["content"]


def test_valid_first_answer_needs_no_repair(server, memory) -> None:
    server.push_json(answer(FRESH[0]))
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert len(proposals) == 1 and proposals[0].verdict.ok
    assert proposals[0].rationale == "idea 0"
    assert proposals[0].meta == {"turn": 0, "origin": "llm", "llm_calls": 1}
    assert len(server.requests) == 1 and wanted(server.requests[0]) == 1


def test_prose_and_fence_around_the_json_are_tolerated(server, memory) -> None:
    server.push_text("Here you go:\n```json\n" + json.dumps(answer(FRESH[0])) + "\n```\nEnjoy!")
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert proposals[0].verdict.ok and len(server.requests) == 1


def test_broken_json_then_valid(server, memory) -> None:
    broken = '{"candidates": [{"rationale": "x", "arch": {"base_channels": 16,'
    server.push_text(broken)
    server.push_json(answer(FRESH[0]))
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert proposals[0].verdict.ok and proposals[0].meta["turn"] == 1
    assistant, repair = repair_turn(server.requests[1])
    assert assistant == broken  # the conversation continues from the model's own answer
    assert "not valid JSON" in repair


def test_schema_errors_name_the_path_then_valid(server, memory) -> None:
    server.push_json(answer(valid_arch(foo=1), valid_arch(base_channels=20)))
    server.push_json(answer(FRESH[0], FRESH[1]))
    proposals = proposer(server).propose(make_ctx(memory, k=2))
    assert [p.verdict.ok for p in proposals] == [True, True]
    _, repair = repair_turn(server.requests[1])
    assert "candidate 1: schema error at candidates/0/arch" in repair
    assert "'foo' was unexpected" in repair
    assert (
        "candidate 2: schema error at candidates/1/arch/base_channels: 20 is not one of" in repair
    )


def test_over_budget_then_valid(server, memory) -> None:
    server.push_json(answer(OVER_BUDGET))
    server.push_json(answer(FRESH[0]))
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert proposals[0].verdict.ok
    _, repair = repair_turn(server.requests[1])
    assert "candidate 1: measured" in repair and "% over the 0.08 GMACs bound" in repair


def test_duplicate_of_memory_is_named_by_trial(server, memory) -> None:
    scored = next(t for t in memory if t.evaluated)
    server.push_json(answer(SPACE.proposal_of(scored.arch)))
    server.push_json(answer(FRESH[0]))
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert proposals[0].verdict.ok
    _, repair = repair_turn(server.requests[1])
    assert f"same architecture as trial {scored.number}" in repair


def test_good_candidates_are_kept_and_only_replacements_asked(server, memory) -> None:
    server.push_json(answer(FRESH[0], OVER_BUDGET, FRESH[0]))  # good, over budget, repeat
    server.push_json(answer(FRESH[1], FRESH[2]))
    proposals = proposer(server).propose(make_ctx(memory, k=3))
    assert [p.verdict.ok for p in proposals] == [True, True, True]
    assert [p.meta["turn"] for p in proposals] == [0, 1, 1]
    assert wanted(server.requests[0]) == 3 and wanted(server.requests[1]) == 2
    _, repair = repair_turn(server.requests[1])
    assert "candidate 3: same architecture as candidate 1 of this round" in repair
    assert "1 candidate(s) from your earlier answers are accepted" in repair
    assert "holding 2 corrected or new" in repair


def test_too_few_candidates_asks_for_more(server, memory) -> None:
    server.push_json(answer(FRESH[0]))
    server.push_json(answer(FRESH[1]))
    proposals = proposer(server).propose(make_ctx(memory, k=2))
    assert len(proposals) == 2 and all(p.verdict.ok for p in proposals)
    _, repair = repair_turn(server.requests[1])
    assert "you sent 1 candidate(s); 1 more are needed" in repair


def test_never_fixed_returns_proposals_with_reasons(server, memory) -> None:
    scored = next(t for t in memory if t.evaluated)
    duplicate = SPACE.proposal_of(scored.arch)
    for _ in range(2):
        server.push_json(answer(OVER_BUDGET, duplicate))
    proposals = proposer(server, max_repairs=1).propose(make_ctx(memory, k=2))
    assert len(server.requests) == 2  # the first answer and one repair turn
    assert [p.verdict.ok for p in proposals] == [False, False]
    assert "% over the" in proposals[0].verdict.reason
    assert proposals[1].verdict.reason == f"same architecture as trial {scored.number}"
    assert proposals[1].raw == duplicate and proposals[0].meta["llm_calls"] == 2


def test_unparseable_to_the_end_returns_the_text_with_its_error(server, memory) -> None:
    server.push_text("I would suggest a wider network.")
    proposals = proposer(server, max_repairs=0).propose(make_ctx(memory, k=2))
    assert len(proposals) == 1
    assert proposals[0].raw == "I would suggest a wider network."
    assert "holds no JSON object" in proposals[0].verdict.reason


def test_server_error_is_retried_by_the_backend(server, memory) -> None:
    server.push_fault(status=500)
    server.push_json(answer(FRESH[0]))
    proposals = proposer(server).propose(make_ctx(memory, k=1))
    assert proposals[0].verdict.ok
    assert proposals[0].meta["llm_calls"] == 1 and len(server.requests) == 2


def test_unavailable_backend_propagates(server, memory) -> None:
    for _ in range(3):
        server.push_fault(status=503)
    with pytest.raises(LLMUnavailable):
        proposer(server).propose(make_ctx(memory, k=1))


def test_spent_budget_propagates_mid_round(server, memory) -> None:
    server.push_json(answer(OVER_BUDGET))  # needs a repair turn, which the budget refuses
    backend = make_backend(
        "openai:test-model",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        budget=LLMBudget(max_tokens=10),
        sleep=lambda s: None,
    )
    with pytest.raises(LLMBudgetExhausted, match="token budget exhausted"):
        LLMProposer(backend).propose(make_ctx(memory, k=1))
    assert len(server.requests) == 1


@pytest.mark.slow
def test_local_smollm2_returns_proposals() -> None:
    """The embedded 135M model is weak: only ask that the round completes with verdicts.

    Empty memory and few tokens keep it short: grammar-constrained decoding on CPU is slow.
    """
    backend = make_backend("local")
    local = LLMProposer(backend, max_repairs=1, max_tokens=300, temperature=0.7)
    proposals = local.propose(make_ctx([], k=1, seed=1))
    assert len(proposals) == 1
    assert all(p.verdict is not None for p in proposals)
    assert all(p.verdict.ok or p.verdict.reason for p in proposals)
