"""Edit mode: the tiny model's answer form, its validation, the menu, origins and fallbacks.

Scripted in-process backends answer; the gate (`check_candidate`) is the independent judge of
what an edit may propose. One slow test asks the real embedded SmolLM2 for one round.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.gate.check import check_candidate
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.propose.edit import (
    REFERENCE,
    edit_bases,
    edit_menu,
    field_choices,
    parse_edits,
)
from diffnas.propose.llm import LLMBackend, LLMRequest, LLMResponse, make_backend
from diffnas.propose.llm_proposer import LLMProposer
from diffnas.propose.parse import AnswerError
from diffnas.propose.registry import resolve_llm_mode
from diffnas.runs import read_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space.arch import ArchConfig
from doubles import OpenAILoopback
from test_propose_conformance import REFERENCE as REF_PROPOSAL
from test_propose_conformance import SPACE, make_ctx, make_memory


class Scripted(LLMBackend):
    """Answers from a list of texts, or from `respond(request)` once the list is spent."""

    endpoint = "scripted"
    model = "scripted"

    def __init__(self, *texts: str, respond: Callable[[LLMRequest], str] | None = None) -> None:
        self.texts = list(texts)
        self.respond = respond
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        if self.texts:
            text = self.texts.pop(0)
        elif self.respond is not None:
            text = self.respond(request)
        else:
            raise AssertionError("script exhausted")
        return LLMResponse(text=text, model=self.model)


def edits(*items: tuple[Any, str, Any]) -> str:
    return json.dumps({"edits": [{"base": b, "field": f, "value": v} for b, f, v in items]})


def first_on_menu(request: LLMRequest) -> str:
    """A model that always takes the first edit its schema offers (as many as asked)."""
    items = request.json_schema["properties"]["edits"]
    choices = [
        (alt["properties"]["base"]["const"], alt["properties"]["field"]["const"], value)
        for alt in items["items"]["anyOf"]
        for value in alt["properties"]["value"]["enum"]
    ]
    return edits(*choices[: items["maxItems"]])


# ----- parsing and validation -----
@pytest.fixture(scope="module")
def bases() -> list:
    return edit_bases(SPACE, make_memory(6))


def problems_of(text: str, bases: list) -> str:
    (answer,) = parse_edits(text, SPACE, bases, max_items=1)
    return "; ".join(answer.problems)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ((REFERENCE, "wings", 2), "field \"wings\" cannot be edited; allowed: base_channels,"),
        ((REFERENCE, "norm_groups", 8), "field \"norm_groups\" cannot be edited"),  # one value
        ((REFERENCE, "base_channels", 20), "value 20 is not allowed for base_channels; allowed: [16, 24, 32, 48]"),
        ((REFERENCE, "mid_attention", 1), "value 1 is not allowed for mid_attention"),  # 1 is not true
        ((REFERENCE, "channel_mult", [1, 4]), "value [1, 4] is not allowed for channel_mult"),
        ((99, "dropout", 0.1), 'unknown base 99; allowed: "reference", '),
        ((True, "dropout", 0.1), "unknown base true"),
        ((REFERENCE, "base_channels", 32), "base_channels is already 32 in the reference"),
    ],
)  # fmt: skip
def test_bad_edits_are_rejected_with_their_reason(item, expected, bases) -> None:
    assert expected in problems_of(edits(item), bases)


def test_wrong_keys_and_envelopes(bases) -> None:
    assert "unexpected 'why'" in problems_of(
        json.dumps({"edits": [{"base": 0, "field": "dropout", "value": 0.1, "why": "x"}]}), bases
    )
    assert "missing 'value'" in problems_of(
        json.dumps({"edits": [{"base": 0, "field": "dropout"}]}), bases
    )
    for text, message in [
        ("no json here", "holds no JSON object"),
        (json.dumps({"candidates": []}), 'one JSON object {"edits": [...]}'),
        (json.dumps({"edits": []}), "list is empty"),
    ]:
        with pytest.raises(AnswerError, match=re.escape(message)):
            parse_edits(text, SPACE, bases, max_items=2)


def test_only_the_first_max_items_edits_are_read(bases) -> None:
    text = edits(*[(REFERENCE, "dropout", 0.1)] * 5)
    assert len(parse_edits(text, SPACE, bases, max_items=2)) == 2


def test_an_applied_edit_is_the_base_with_one_field_changed(bases) -> None:
    trial = next(b for b in bases if b.label != REFERENCE)
    text = edits((REFERENCE, "channel_mult", [1, 1, 3]), (trial.label, "dropout", 0.1))
    first, second = parse_edits(text, SPACE, bases, max_items=2)
    assert not first.problems and not second.problems
    # expected architectures written out independently of the edit code
    assert SPACE.complete(first.proposal) == ArchConfig(
        image_size=16, in_channels=1, base_channels=32, channel_mult=[1, 1, 3], num_res_blocks=1,
        attention_resolutions=[8], head_channels=32, norm_groups=8,
    )  # fmt: skip
    expected = trial.arch.model_copy(update={"dropout": 0.1})
    assert SPACE.complete(second.proposal).key() == expected.key()
    assert first.rationale == "edit of the reference: channel_mult [1, 2, 2] -> [1, 1, 3]"


# ----- bases and the menu -----
def test_bases_are_the_reference_then_the_best_trials() -> None:
    memory = make_memory(12)
    bases = edit_bases(SPACE, memory, max_bases=4)
    scored = sorted((t for t in memory if t.evaluated), key=lambda t: t.score)
    assert [b.label for b in bases] == [REFERENCE, *(t.number for t in scored[:3])]


def test_menu_offers_exactly_the_edits_the_gate_accepts() -> None:
    memory = make_memory(6)
    bases = edit_bases(SPACE, memory)
    seen = {t.arch.key() for t in memory if t.status != "rejected"}

    def in_budget(arch: ArchConfig) -> bool:
        return budget_verdict(measure_cost(arch), SPACE.budget)[0]

    menu = edit_menu(SPACE, bases[:1], in_budget, seen)
    for base in bases[:1]:
        current = SPACE.proposal_of(base.arch)
        for name, values in field_choices(SPACE).items():
            for value in values:
                if value == current[name]:
                    continue
                verdict = check_candidate({**current, name: value}, SPACE, memory, [])
                offered = value in menu.options.get((base.label, name), [])
                new = verdict.arch is not None and verdict.arch.key() != base.arch.key()
                assert offered == (verdict.ok and new), (base.label, name, value, verdict.reason)
    # the reference's budget-limited choices, as measured: 48 channels is 0.146 GMACs, 2 blocks
    # 0.0966 GMACs (bound 0.08); 24 channels cannot hold 32-channel heads
    assert menu.options[(REFERENCE, "base_channels")] == [16]
    assert (REFERENCE, "num_res_blocks") not in menu.options


def test_menu_cost_checks_stop_at_the_bound() -> None:
    asked: list[str] = []

    def never(arch: ArchConfig) -> bool:
        asked.append(arch.key())
        return False

    menu = edit_menu(SPACE, edit_bases(SPACE, []), never, set(), max_checked=5)
    assert len(asked) == 5 and len(menu) > 0  # past the bound the gate decides


# ----- the proposer in edit mode -----
def edit_proposer(backend: LLMBackend, **kwargs: Any) -> LLMProposer:
    """Edit mode without costing the menu (seconds per round; tested above): the gate judges."""
    kwargs = {"max_repairs": 2, "menu_cost_limit": 0, **kwargs}
    return LLMProposer(backend, mode="edit", **kwargs)


def test_edit_round_proposes_llm_edits() -> None:
    memory = make_memory(6)
    backend = Scripted(respond=first_on_menu)
    # the menu costed (one base keeps it short): whatever the model picks is in budget
    proposer = edit_proposer(backend, max_bases=1, menu_cost_limit=None)
    proposals = proposer.propose(make_ctx(memory, k=2))
    assert [p.meta["origin"] for p in proposals] == ["llm-edit", "llm-edit"]
    assert all(p.verdict.ok for p in proposals) and len(backend.requests) == 1
    assert proposals[0].meta["edit"]["base"] == REFERENCE
    assert proposals[0].rationale.startswith("edit of the reference: ")
    prompt = backend.requests[0].messages[-1].content
    assert "as EDITS" in prompt and '"reference"' in prompt


def test_repair_names_the_problem_and_leaves_taken_edits_off_the_menu() -> None:
    memory = make_memory(6)
    good = (REFERENCE, "dropout", 0.1)
    backend = Scripted(edits((77, "dropout", 0.1), good), edits(good), respond=first_on_menu)
    proposals = edit_proposer(backend).propose(make_ctx(memory, k=2))
    assert all(p.verdict.ok for p in proposals)
    assert [p.meta["turn"] for p in proposals] == [0, 2]
    repair = backend.requests[1].messages[-1].content
    assert "edit 1: unknown base 77" in repair
    # after the good edit was accepted, the schema no longer offers it
    for request in backend.requests[1:]:
        alts = request.json_schema["properties"]["edits"]["items"]["anyOf"]
        dropout = [a for a in alts if a["properties"]["field"]["const"] == "dropout"]
        assert all(a["properties"]["base"]["const"] != REFERENCE for a in dropout)
    # the model repeated it anyway in turn 1 (a backend without a grammar can): refused as a repeat
    assert (
        "same architecture as candidate 1 of this round" in backend.requests[2].messages[-1].content
    )


def test_open_slots_are_filled_by_fallbacks_marked_as_such() -> None:
    memory = make_memory(6)
    backend = Scripted(respond=lambda request: "I cannot decide.")
    proposals = edit_proposer(backend, max_repairs=1).propose(make_ctx(memory, k=2))
    assert len(backend.requests) == 2
    assert [p.meta["origin"] for p in proposals] == ["fallback", "fallback"]
    assert all(p.verdict.ok for p in proposals)
    assert proposals[0].rationale.startswith("fallback:")
    assert proposals[0].meta["refused_edits"] == 2


def test_without_fallback_the_refusals_are_returned_with_reasons() -> None:
    backend = Scripted(respond=lambda request: "I cannot decide.")
    proposer = edit_proposer(backend, max_repairs=0, fallback=False)
    proposals = proposer.propose(make_ctx(make_memory(6), k=2))
    assert len(proposals) == 1 and not proposals[0].verdict.ok
    assert proposals[0].meta["origin"] == "llm-edit"
    assert "holds no JSON object" in proposals[0].verdict.reason


def test_edit_requests_are_deterministic() -> None:
    def requests() -> list[str]:
        backend = Scripted(edits((REFERENCE, "base_channels", 48)), respond=first_on_menu)
        edit_proposer(backend).propose(make_ctx(make_memory(6), k=2, seed=5))
        return [r.canonical_json() for r in backend.requests]

    first, second = requests(), requests()
    assert first == second and len(first) == 2  # 48 channels is over budget: one repair turn


def test_full_mode_stays_the_default_and_marks_llm() -> None:
    answer = {"candidates": [{"rationale": "r", "arch": {**REF_PROPOSAL, "dropout": 0.1}}]}
    backend = Scripted(json.dumps(answer))
    proposals = LLMProposer(backend).propose(make_ctx(make_memory(6), k=1))
    assert proposals[0].meta["origin"] == "llm" and proposals[0].verdict.ok
    assert "candidates" in backend.requests[0].json_schema["properties"]


def test_modes_resolve_and_bad_ones_are_refused() -> None:
    assert resolve_llm_mode("auto", "local") == "edit"
    assert resolve_llm_mode("auto", "openai:gpt-4o") == "full"
    assert resolve_llm_mode("full", "local") == "full"
    with pytest.raises(UserError, match="llm_mode='diff' is unknown; allowed: full, edit, auto"):
        resolve_llm_mode("diff", "local")
    with pytest.raises(UserError, match="llm_mode"):
        LLMProposer(Scripted(), mode="auto")


# ----- the loop records origins -----
class ScoreByCost(Executor):
    """Training stand-in: 'scores' a candidate by its MACs, instantly."""

    name = "fake"

    def _run(self, job: EvalJob) -> EvalResult:
        return EvalResult(status="complete", score=measure_cost(job.arch).gmacs * 100)


def test_search_records_origins_in_study_round_files_and_summary(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("diffnas.propose.llm_proposer.MENU_COST_LIMIT", 0)
    # round 1: one good edit, then nothing usable (the second slot falls back);
    # round 2: the model takes the menu's first edits
    answers = iter([edits((REFERENCE, "dropout", 0.1)), "??", "??"])
    backend = Scripted(respond=lambda r: next(answers, None) or first_on_menu(r))
    config = SearchConfig(
        space="tiny", llm="local", rounds=2, per_round=2, max_repairs=2, promote=0
    )
    run_dir = tmp_path / "run"
    summary = SearchRun(config, run_dir, llm_backend=backend, executor=ScoreByCost()).run()

    assert summary["origins"] == {"llm": 0, "llm-edit": 3, "fallback": 1}
    assert read_json(run_dir / "summary.json")["origins"] == summary["origins"]
    trials = study_mod.open_study(run_dir).get_trials()
    assert [t.user_attrs["origin"] for t in trials] == [
        "llm-edit",
        "fallback",
        "llm-edit",
        "llm-edit",
    ]
    assert len({t.user_attrs["arch_hash"] for t in trials}) == 4
    entries = read_json(run_dir / "rounds" / "round-000.json")["entries"]
    assert [e["origin"] for e in entries] == ["llm-edit", "fallback"]
    assert entries[0]["meta"]["edit"] == {"base": "reference", "field": "dropout", "value": 0.1}

    from diffnas.cli.search_cmd import show_status

    capsys.readouterr()
    show_status(run_dir)
    out = capsys.readouterr().out
    assert "origin" in out and "fallback" in out and "llm-edit" in out
    assert "trained candidates by origin: 0 llm, 3 llm-edit, 1 fallback (4 in all)" in out


def test_baseline_origin_is_its_name(tmp_path: Path) -> None:
    config = SearchConfig(space="tiny", proposer="random", rounds=1, per_round=2, promote=0)
    summary = SearchRun(config, tmp_path / "run", executor=ScoreByCost()).run()
    assert summary["origins"] == {"random": 2}


@pytest.mark.slow
def test_local_smollm2_edits() -> None:
    """The embedded 135M model, grammar-bound to the menu, proposes an acceptable edit."""
    proposer = LLMProposer(make_backend("local"), mode="edit", max_repairs=0, temperature=1.0)
    ctx = make_ctx([], k=1, seed=1)
    (proposal,) = proposer.propose(ctx)
    assert proposal.meta["origin"] == "llm-edit" and proposal.verdict.ok


def test_edit_mode_search_replays_exactly(tmp_path: Path, monkeypatch) -> None:
    """Edit-mode requests are byte-identical on a second run, so the record answers them all."""
    monkeypatch.setattr("diffnas.propose.llm_proposer.MENU_COST_LIMIT", 0)
    monkeypatch.setenv("EDIT_REPLAY_KEY", "sk-edit-replay-0123")

    def respond(body: dict[str, Any]) -> str:
        schema = body["response_format"]["json_schema"]["schema"]
        return first_on_menu(LLMRequest(messages=[{"role": "user", "content": "-"}], schema=schema))

    config = SearchConfig(
        space="tiny", llm="openai:test-model", llm_mode="edit", api_key_env="EDIT_REPLAY_KEY",
        rounds=2, per_round=2, promote=0, llm_attempts=1,
    )  # fmt: skip
    with OpenAILoopback(responder=respond) as server:
        first = tmp_path / "first"
        live = config.model_copy(update={"base_url": server.base_url})
        recorded = SearchRun(live, first, executor=ScoreByCost()).run()
        asked = len(server.requests)
    second = tmp_path / "second"
    replayed = config.model_copy(update={"replay": str(first)})
    summary = SearchRun(replayed, second, executor=ScoreByCost()).run()

    def outcome(run_dir: Path) -> list[tuple]:
        study = study_mod.open_study(run_dir)
        return [(t.user_attrs["origin"], t.user_attrs.get("arch_hash")) for t in study.trials]

    assert outcome(first) == outcome(second) and len(outcome(first)) == 4
    assert summary["origins"] == recorded["origins"] and summary["origins"]["llm-edit"] >= 2
    assert summary["llm"]["calls"] == asked  # every request found its recorded answer
