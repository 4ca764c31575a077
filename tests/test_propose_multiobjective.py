"""Proposing for two objectives: the prompt's latency, front and request; Optuna's samplers on a
multi-objective memory (TPE, NSGA-II); a single-objective prompt left as it was."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from diffnas.gate.check import LatencyCheck, check_candidate
from diffnas.gate.memory import TrialRecord
from diffnas.propose.baselines import NSGAIIProposer, TPEProposer, memory_study
from diffnas.propose.edit import edit_bases
from diffnas.propose.prompt import TEMPLATE_DIR, MemoryLayout, PromptTemplates, round_messages
from diffnas.space.params import distributions
from test_propose_conformance import SPACE, make_ctx, make_memory


def fake_ms(arch) -> float:
    return arch.base_channels / 4 + arch.num_res_blocks


def with_latency(memory: list[TrialRecord]) -> list[TrialRecord]:
    """The memory as a latency search records it: every candidate that parsed measured."""
    return [
        dataclasses.replace(t, latency_ms=fake_ms(t.arch) if t.status == "complete" else None)
        for t in memory
    ]


def latency_ctx(memory: list[TrialRecord], budget_ms: float | None = None, **kwargs):
    check = LatencyCheck(fake_ms, budget_ms=budget_ms, conditions="batch 1, cpu, fp32")
    ctx = make_ctx(memory, **kwargs)
    ctx.objectives, ctx.latency = ("score", "latency"), check
    ctx.check = lambda raw, accepted: check_candidate(raw, SPACE, memory, accepted, check)
    return ctx


def independent_front(memory: list[TrialRecord]) -> list[int]:
    scored = [t for t in memory if t.status == "complete"]
    return sorted(
        (
            t.number
            for t in scored
            if not any(
                o.score <= t.score  # type: ignore[operator]
                and o.latency_ms <= t.latency_ms  # type: ignore[operator]
                and (o.score, o.latency_ms) != (t.score, t.latency_ms)
                for o in scored
            )
        ),
        key=lambda n: memory[n].score,  # type: ignore[arg-type, return-value]
    )


@pytest.fixture(scope="module")
def memory() -> list[TrialRecord]:
    return with_latency(make_memory(16, seed=3))  # a front of three


def test_a_single_objective_prompt_is_what_the_templates_gave_before(tmp_path, memory) -> None:
    # the templates as they were before the two-objective placeholders were added
    for name in ("round.txt", "edit.txt", "memory.txt"):
        text = (TEMPLATE_DIR / name).read_text()
        old = text.replace("$objective\n\n", "").replace("\n$front", "")
        assert old != text
        (tmp_path / name).write_text(old)
    ctx = make_ctx(make_memory(10))
    assert round_messages(ctx, PromptTemplates()) == round_messages(ctx, PromptTemplates(tmp_path))
    for with_memory in (True, False):
        ours = round_messages(ctx, PromptTemplates(), with_memory=with_memory)[1].content
        assert "Pareto" not in ours and " ms" not in ours


def test_the_memory_shows_latency_and_the_front_and_the_request_asks_to_extend_it(
    memory,
) -> None:
    text = round_messages(latency_ctx(memory), PromptTemplates())[1].content
    front = independent_front(memory)
    assert len(front) == 3
    listed = ", ".join(
        f"trial {n} (rfid {memory[n].score:.4g}, {memory[n].latency_ms:.3g} ms)" for n in front
    )
    assert (
        "Pareto front so far (rfid against the measured latency of one forward pass; no other "
        f"candidate is better on both), best rfid first: {listed}." in text
    )
    first = memory[front[0]]
    assert (
        f"{first.gmacs:.3g} GMACs, {first.params_m:.3g} M params, {first.latency_ms:.3g} ms" in text
    )
    assert (
        "This search has two objectives, both lower is better: rfid and the measured latency of "
        "one forward pass (measured: batch 1, cpu, fp32). Extend the Pareto front: propose "
        "candidates faster than a front member at a similar rfid" in text
    )
    assert "0.01 to 0.08 GMACs" in text  # no latency bound: the band stays
    assert "\n\n\n" not in text


def test_a_latency_budget_replaces_the_band_in_the_space_description(memory) -> None:
    text = round_messages(latency_ctx(memory, budget_ms=9.5), PromptTemplates())[1].content
    assert (
        "- budget: at most 9.5 ms per forward pass (measured: batch 1, cpu, fp32), instead of a "
        "GMACs band" in text
    )
    assert "GMACs per image per forward pass" not in text


def test_a_compacted_memory_keeps_the_front(memory) -> None:
    layout = MemoryLayout(max_entries=3, top_k=1, recent=1)
    ctx = latency_ctx(memory)
    text = round_messages(ctx, PromptTemplates(), layout=layout)[1].content
    for n in independent_front(memory):
        assert f"\ntrial {n}: " in text


def test_edit_bases_put_the_front_first(memory) -> None:
    front = independent_front(memory)
    bases = edit_bases(SPACE, memory, max_bases=len(front) + 1, first=front)
    assert [b.label for b in bases] == ["reference", *front]


def test_the_memory_study_has_both_values_and_nsga2_generations(memory) -> None:
    ctx = latency_ctx(memory)
    proposer = NSGAIIProposer(population_size=3)
    study = proposer._study(ctx, distributions(SPACE), filler=99.0)
    assert len(study.directions) == 2
    trials = study.get_trials(deepcopy=False)
    feasible = {(t.values[0], t.values[1]) for t in trials if t.constraints["budget"] <= 0}
    assert feasible == {(t.score, t.latency_ms) for t in memory if t.evaluated}
    key = optuna.samplers.NSGAIISampler._get_generation_key()
    assert [t.system_attrs[key] for t in trials] == [i // 3 for i in range(len(trials))]
    # the elite NSGA-II breeds from: the memory's first front is in it
    parents = proposer._sampler(ctx).select_parent(study, max(t.system_attrs[key] for t in trials))
    best = {tuple(t.values) for t in study.best_trials}
    assert best <= {tuple(t.values) for t in parents}


def test_nsga2_generations_follow_the_evaluation_budget(memory) -> None:
    """Unset, P is half the budget (2..8): a 10-evaluation search breeds from its 6th."""
    ctx = latency_ctx(memory)
    ctx.evaluations = 10
    study = NSGAIIProposer()._study(ctx, distributions(SPACE), filler=99.0)
    key = optuna.samplers.NSGAIISampler._get_generation_key()
    trials = study.get_trials(deepcopy=False)
    assert [t.system_attrs[key] for t in trials] == [i // 5 for i in range(len(trials))]
    ctx.evaluations = 100
    assert NSGAIIProposer().population_for(ctx) == 8
    assert NSGAIIProposer(population_size=3).population_for(ctx) == 3


@pytest.mark.parametrize(
    "proposer", [TPEProposer(n_startup_trials=2), NSGAIIProposer(population_size=2)]
)
def test_optuna_samplers_fill_a_two_objective_round_under_a_latency_budget(
    proposer, memory
) -> None:
    ctx = latency_ctx(memory, budget_ms=12.0, k=3)
    proposals = proposer.propose(ctx)
    assert len(proposals) == 3
    for p in proposals:
        assert p.verdict is not None and p.verdict.ok, p.verdict
        assert p.verdict.latency_ms is not None and p.verdict.latency_ms <= 12.0
    assert len({p.verdict.arch.key() for p in proposals}) == 3  # type: ignore[union-attr]
    again = proposer.propose(latency_ctx(memory, budget_ms=12.0, k=3))
    assert [p.raw for p in again] == [p.raw for p in proposals]  # seeded from ctx.rng


def test_memory_study_values_a_macs_objective_with_gmacs(memory) -> None:
    ctx = make_ctx(memory)
    ctx.objectives = ("score", "macs")
    study = memory_study(ctx, optuna.samplers.RandomSampler(seed=0), distributions(SPACE), 99.0)
    feasible = {tuple(t.values) for t in study.trials if t.constraints["budget"] <= 0}
    assert feasible == {(t.score, t.gmacs) for t in memory if t.evaluated}
