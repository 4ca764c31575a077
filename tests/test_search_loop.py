"""The search loop end to end on tiny candidates: faults from a loopback LLM, replay, kill -9 + resume.

Every test runs the real pipeline (study, gate, trainer, sampler, classifier RFID) on a
200-image digits subset with a few training steps, so a candidate costs a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.search.requests import Requests
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from doubles import OpenAILoopback

SPACE = load_space("tiny")
REF = SPACE.proposal_of(get_reference("tiny-digits"))  # in the space and within budget
SMALL = {**REF, "base_channels": 16}
SMALL2 = {**REF, "base_channels": 16, "num_res_blocks": 2}
SMALL3 = {**REF, "base_channels": 24, "head_channels": 16, "attention_resolutions": []}
OVER = {
    **REF,
    "base_channels": 48,
    "channel_mult": [1, 2, 3],
    "num_res_blocks": 2,
    "head_channels": 16,
}
TINY_EVAL = EvalSpec(
    recipe="proxy",
    recipe_overrides={"steps": 8, "batch_size": 8, "log_every": 4, "checkpoint_every": 4},
    score=ScoreSpec(num_samples=16, steps=2, batch_size=16),
    device="cpu",
)


def config(**overrides) -> SearchConfig:
    base = dict(
        space="tiny", data="digits", data_subset=200, rounds=3, per_round=2, max_repairs=2, promote=1,
        proxy=TINY_EVAL, final=TINY_EVAL.model_copy(update={"score": ScoreSpec(metric="fid", num_samples=16, steps=2)}),
        llm_timeout_s=1.0, llm_attempts=4, llm_backoff_s=0.0,
    )  # fmt: skip
    base.update(overrides)
    return SearchConfig(**base)


def answer(*archs: dict) -> str:
    return json.dumps(
        {"candidates": [{"rationale": f"idea {i}", "arch": a} for i, a in enumerate(archs)]}
    )


def trials(run_dir: Path) -> list:
    return study_mod.load_memory(study_mod.open_study(run_dir))


def test_faulty_llm_search_completes_with_valid_candidates_and_reasons(
    tmp_path, monkeypatch
) -> None:
    assert measure_cost(SPACE.complete(OVER)).gmacs > SPACE.budget.max_gmacs
    monkeypatch.setenv("LOOPBACK_KEY", "sk-test-secret-123")
    with OpenAILoopback() as server:
        # round 1: a 500, then broken JSON, then a schema-invalid answer, then one good + one over budget
        server.push_fault(status=500)
        server.push_text('{"candidates": [ {"rationale": "oops", "arch": ')
        server.push_text(answer({**SMALL, "wings": 2}, {**SMALL, "base_channels": 20}))
        server.push_text(answer(SMALL, OVER))
        # round 2: a 429 with retry-after, then a duplicate of trial 0 and a good one;
        # the repair turn times out once, then answers a good one
        server.push_fault(status=429, retry_after=0)
        server.push_text(answer(SMALL, SMALL2))
        server.push_fault(delay=2.5)
        server.push_text(answer(REF))
        # round 3: the endpoint is dead (every try fails): the round fails, not the run
        for _ in range(4):
            server.push_fault(status=503)
        cfg = config(llm="openai:test-model", base_url=server.base_url, api_key_env="LOOPBACK_KEY")
        run_dir = tmp_path / "runs" / "00000-search"
        summary = SearchRun(cfg, run_dir).run()

    memory = trials(run_dir)
    complete = [t for t in memory if t.status == "complete"]
    rejected = [t for t in memory if t.status == "rejected"]
    assert summary["stop_reason"] == "all rounds done"
    # the duplicate of round 2 was repaired; the over-budget one of round 1 never was
    assert len(complete) == 3 and len(rejected) == 1
    for t in complete:  # everything trained is valid and in budget
        assert SPACE.contains(t.arch)
        assert budget_verdict(measure_cost(t.arch), SPACE.budget)[0]
        assert t.score is not None and t.scores["rfid"]["protocol"]["num_generated"] == 16
    assert "216% over the 0.08 GMACs bound" in rejected[0].reason
    assert rejected[0].gmacs == pytest.approx(0.253, abs=1e-3)
    # the repair turns told the model what was wrong
    repair_texts = [
        json.dumps(r["messages"][-1]) for r in server.requests if len(r["messages"]) > 2
    ]
    assert any("wings" in t for t in repair_texts)
    assert any("same architecture as trial 0" in t for t in repair_texts)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round_failed"] == [2]
    assert summary["final"][0]["status"] == "complete"
    # the key never reaches disk
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".db"):
            assert b"sk-test-secret-123" not in path.read_bytes(), path


def test_replay_reproduces_trials_and_scores(tmp_path) -> None:
    def responder(body: dict) -> str:
        # a deterministic "model": a different small candidate per round, from the prompt's length
        n = sum(len(m["content"]) for m in body["messages"])
        return answer([SMALL, SMALL2, SMALL3][n % 3], REF)

    with OpenAILoopback(responder=responder) as server:
        cfg = config(llm="openai:test-model", base_url=server.base_url, rounds=2, promote=0)
        first = tmp_path / "runs" / "00000-search"
        SearchRun(cfg, first).run()
    # the server is gone: the replay answers from the record, offline
    second = tmp_path / "runs" / "00001-search"
    SearchRun(cfg.model_copy(update={"replay": str(first), "base_url": None}), second).run()

    def outcome(run_dir: Path) -> list[tuple]:
        return [
            (t.round, t.slot, t.status, t.arch.arch_hash() if t.arch else None, t.score)
            for t in trials(run_dir)
        ]

    assert outcome(first) == outcome(second)
    assert sum(1 for o in outcome(first) if o[2] == "complete") >= 2


# kill -9 mid-training, then --resume: every trial exactly once, the interrupted one finished in its
# own folder. One search child and its resume cost ~40 s, so that test runs once, on the two-
# objective search (test_search_objectives.py), which checks this and its measured latencies.


def test_resume_reuses_recorded_llm_answers(tmp_path, monkeypatch) -> None:
    def responder(body: dict) -> str:
        first_round = "none yet" in body["messages"][-1]["content"]
        return answer(SMALL, SMALL2) if first_round else answer(REF, SMALL3)

    real_gate = Requests.gate
    gates = []

    def killed_in_round_2(self, proposals, memory):
        # the LLM has answered round 2 (and it is recorded); the process dies before the
        # round's file is written
        gates.append(1)
        if len(gates) == 2:
            raise KeyboardInterrupt
        return real_gate(self, proposals, memory)

    with OpenAILoopback(responder=responder) as server:
        cfg = config(llm="openai:test-model", base_url=server.base_url, rounds=2, promote=0)
        run_dir = tmp_path / "runs" / "00000-search"
        monkeypatch.setattr(Requests, "gate", killed_in_round_2)
        with pytest.raises(KeyboardInterrupt):
            SearchRun(cfg, run_dir).run()
        assert not (run_dir / "rounds" / "round-001.json").exists()
        paid = len(server.requests)
        monkeypatch.setattr(Requests, "gate", real_gate)
        SearchRun(cfg, run_dir).run()
        assert len(server.requests) == paid  # round 2's answer came from llm/calls.jsonl
    final = trials(run_dir)
    assert sorted((t.round, t.slot, t.status) for t in final) == [
        (0, 0, "complete"), (0, 1, "complete"), (1, 0, "complete"), (1, 1, "complete"),
    ]  # fmt: skip


def test_opening_a_study_leaves_optuna_verbosity_as_it_was(tmp_path: Path) -> None:
    import optuna

    previous = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.DEBUG)
        study_mod.open_study(tmp_path)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(previous)
