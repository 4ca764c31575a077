"""Every proposer fills a round the same way: checked, at most K, reproducible, no repeats.

The LLM proposers talk through the real `openai` SDK to a loopback server whose responder
answers valid candidates (drawn from the space with the request's seed). The helpers here
(`SPACE`, `make_memory`, `make_ctx`, `valid_arch`, `openai_backend`) are shared by the other
`test_propose_*` files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from diffnas.gate.check import check_candidate
from diffnas.gate.memory import TrialRecord
from diffnas.propose.base import Proposal, ProposalContext, Proposer
from diffnas.propose.llm import LLMBackend, RetryPolicy, make_backend
from diffnas.propose.registry import PROPOSERS, make_proposer
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from doubles import OpenAILoopback

SPACE = load_space("tiny")
KEY_ENV = "DIFFNAS_PROPOSE_TEST_KEY"
REFERENCE = SPACE.proposal_of(get_reference("tiny-digits"))  # 0.066 GMACs: inside the budget


def valid_arch(**changes: Any) -> dict[str, Any]:
    """An in-budget proposal for the tiny space (the reference, with `changes`)."""
    return {**REFERENCE, **changes}


# Three in-budget architectures the memory never holds (the repair tests answer with them).
FRESH = [valid_arch(), valid_arch(dropout=0.1), valid_arch(base_channels=24, head_channels=16)]


def make_memory(n: int = 8, seed: int = 0) -> list[TrialRecord]:
    """`n` earlier candidates: in-budget ones scored, over-budget ones rejected (as the loop records)."""
    rng = random.Random(seed)
    fresh_keys = {SPACE.complete(a).key() for a in FRESH}
    memory: list[TrialRecord] = []
    while len(memory) < n:
        arch = SPACE.sample(rng)
        if arch.key() in fresh_keys:
            continue
        verdict = check_candidate(SPACE.proposal_of(arch), SPACE, memory, [])
        if verdict.reason and verdict.reason.startswith("same architecture"):
            continue
        record = TrialRecord(
            number=len(memory),
            round=len(memory) // 4,
            slot=len(memory) % 4,
            proposer="random",
            status="complete" if verdict.ok else "rejected",
            arch=arch,
            reason=verdict.reason or "",
            gmacs=verdict.cost.gmacs if verdict.cost else None,
            params_m=verdict.cost.params_m if verdict.cost else None,
            score=round(rng.uniform(10, 60), 2) if verdict.ok else None,
        )
        memory.append(record)
    return memory


def make_ctx(
    memory: list[TrialRecord], *, k: int = 3, seed: int = 0, rnd: int = 2
) -> ProposalContext:
    return ProposalContext(
        space=SPACE,
        memory=memory,
        round=rnd,
        num_rounds=5,
        k=k,
        rng=random.Random(seed),
        check=lambda raw, accepted: check_candidate(raw, SPACE, memory, accepted),
        task="generate 16x16 grey digits; minimise rfid",
        reference_line="Reference tiny-digits: 0.0657 GMACs, 1.11 M parameters.",
    )


def openai_backend(server: OpenAILoopback) -> LLMBackend:
    return make_backend(
        "openai:test-model",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.0, jitter=0.0),
        sleep=lambda s: None,
    )


def wanted(body: dict[str, Any]) -> int:
    """How many candidates a request asks for (its schema's maxItems)."""
    schema = body["response_format"]["json_schema"]["schema"]
    return schema["properties"]["candidates"]["maxItems"]


def valid_responder(memory: list[TrialRecord]):
    """Answers each request with valid candidates drawn with the request's seed."""

    def respond(body: dict[str, Any]) -> str:
        rng = random.Random(body["seed"] * 100 + len(body["messages"]))
        accepted, candidates = [], []
        while len(candidates) < wanted(body):
            raw = SPACE.proposal_of(SPACE.sample(rng))
            verdict = check_candidate(raw, SPACE, memory, accepted)
            if verdict.ok:
                accepted.append(verdict.arch)
                candidates.append({"rationale": f"sample {len(candidates)}", "arch": raw})
        return json.dumps({"candidates": candidates})

    return respond


LLM_NAMES = ("diffnas", "llm-no-memory")


def build_proposer(name: str, server: OpenAILoopback) -> Proposer:
    """A fresh proposer; the LLM ones answer through `server`."""
    backend = openai_backend(server) if name in LLM_NAMES else None
    opts: dict[str, Any] = {
        "tpe": {"n_startup_trials": 3},
        "evolution": {"population_size": 4, "tournament_size": 2},
    }.get(name, {})
    return make_proposer(name, llm_backend=backend, **opts)


@pytest.fixture(scope="module")
def memory() -> list[TrialRecord]:
    return make_memory(8)


@pytest.fixture
def server(memory, monkeypatch) -> Iterator[OpenAILoopback]:
    monkeypatch.setenv(KEY_ENV, "sk-propose-test-0123456789")
    with OpenAILoopback(responder=valid_responder(memory)) as running:
        yield running


def raws(proposals: list[Proposal]) -> list[str]:
    return [json.dumps(p.raw, sort_keys=True) for p in proposals]


@pytest.mark.parametrize("name", PROPOSERS)
def test_round_is_checked_bounded_new_and_reproducible(name, server, memory) -> None:
    proposer = build_proposer(name, server)
    assert proposer.name == name
    first = proposer.propose(make_ctx(memory, k=3, seed=11))
    assert len(first) == 3  # the tiny space has room for a full round
    memory_keys = {t.arch.key() for t in memory if t.arch is not None}
    accepted = []
    for p in first:
        assert p.proposer == name
        assert p.verdict is not None and p.verdict.ok, p.verdict
        verdict = check_candidate(p.raw, SPACE, memory, accepted)  # the loop's re-check passes
        assert verdict.ok, verdict.reason
        assert verdict.arch.key() not in memory_keys
        accepted.append(verdict.arch)
    again = build_proposer(name, server).propose(make_ctx(memory, k=3, seed=11))
    assert raws(again) == raws(first)  # same seed, memory and round: same proposals
    other = build_proposer(name, server).propose(make_ctx(memory, k=3, seed=12))
    assert raws(other) != raws(first)


@pytest.mark.parametrize("name", PROPOSERS)
def test_round_never_exceeds_k(name, server, memory) -> None:
    proposals = build_proposer(name, server).propose(make_ctx(memory, k=1, seed=3))
    assert len(proposals) == 1 and proposals[0].verdict.ok


@pytest.mark.parametrize("name", LLM_NAMES)
def test_llm_requests_are_identical_for_identical_rounds(name, server, memory) -> None:
    build_proposer(name, server).propose(make_ctx(memory, seed=4))
    build_proposer(name, server).propose(make_ctx(memory, seed=4))
    first, second = server.requests
    assert first == second  # no timestamps, same derived seed: replay/resume keys match
    assert isinstance(first["seed"], int)
    prompt = first["messages"][1]["content"]
    assert ("Search memory" in prompt) == (name == "diffnas")
    assert "trial 0:" in prompt or name != "diffnas"
