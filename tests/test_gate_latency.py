"""The gate with measured latency (a budget instead of the GMACs band, or an objective) and the
Pareto front of score against cost, checked against a filter written here and Optuna's own."""

from __future__ import annotations

import random

import optuna
import pytest

from diffnas.gate.check import LatencyCheck, check_candidate
from diffnas.gate.memory import TrialRecord, non_dominated, pareto_front
from diffnas.model.cost import measure_cost
from diffnas.space.references import get_reference
from diffnas.space.search_space import Budget, load_space

SPACE = load_space("tiny")
REF = SPACE.proposal_of(get_reference("tiny-digits"))  # 0.066 GMACs: inside the 0.01-0.08 band
SMALL = {**REF, "base_channels": 16}
OVER = {**REF, "base_channels": 48, "channel_mult": [1, 2, 3], "num_res_blocks": 2, "head_channels": 16}  # fmt: skip


def fake_ms(arch) -> float:
    """A deterministic stand-in for the timing: grows with width and depth."""
    return arch.base_channels / 4 + arch.num_res_blocks


class Counting:
    def __init__(self) -> None:
        self.measured: list[str] = []

    def __call__(self, arch) -> float:
        self.measured.append(arch.arch_hash())
        return fake_ms(arch)


def test_the_latency_budget_refuses_an_over_budget_candidate_with_its_measured_value() -> None:
    ms = fake_ms(SPACE.complete(REF))  # 32 / 4 + 1 = 9 ms
    check = LatencyCheck(measure=fake_ms, budget_ms=6.0, conditions="batch 1, cpu, fp32")
    verdict = check_candidate(REF, SPACE, [], [], check)
    assert not verdict.ok and verdict.latency_ms == ms == 9.0
    assert verdict.reason == (
        "measured 9 ms per forward pass (batch 1, cpu, fp32), 50% over the 6 ms bound"
    )
    small = check_candidate(SMALL, SPACE, [], [], check)  # 16 / 4 + 1 = 5 ms
    assert small.ok and small.latency_ms == 5.0


def test_the_latency_budget_replaces_the_gmacs_band_but_not_the_parameter_bound() -> None:
    over = SPACE.complete(OVER)
    assert measure_cost(over).gmacs > SPACE.budget.max_gmacs  # refused by the band alone
    assert not check_candidate(OVER, SPACE, [], []).ok
    wide = LatencyCheck(measure=fake_ms, budget_ms=100.0)
    verdict = check_candidate(OVER, SPACE, [], [], wide)
    assert verdict.ok and verdict.latency_ms == fake_ms(over)
    bounded = SPACE.model_copy(
        update={"budget": Budget(max_gmacs=0.08, min_gmacs=0.01, max_params_m=0.5)}
    )
    counting = Counting()
    refused = check_candidate(OVER, bounded, [], [], LatencyCheck(counting, budget_ms=100.0))
    assert not refused.ok and "M bound" in str(refused.reason)
    assert refused.latency_ms is None and counting.measured == []  # nothing timed


def test_a_latency_objective_measures_only_what_passes_the_band() -> None:
    counting = Counting()
    check = LatencyCheck(measure=counting)  # an objective: no bound
    assert check_candidate(REF, SPACE, [], [], check).latency_ms == 9.0
    refused = check_candidate(OVER, SPACE, [], [], check)
    assert "GMACs bound" in str(refused.reason) and refused.latency_ms is None
    assert counting.measured == [SPACE.complete(REF).arch_hash()]


def dominated_by_any(points: list[tuple[float, float]]) -> list[bool]:
    """The definition, one pair at a time: on the front unless some other point is no worse on
    both and better on one."""
    return [
        not any(q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1]) for q in points)
        for p in points
    ]


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_matches_the_definition_and_optunas_front(seed: int) -> None:
    rng = random.Random(seed)
    # few distinct values, so ties on one axis and repeated points occur
    points = [(float(rng.randint(0, 6)), float(rng.randint(0, 6))) for _ in range(40)]
    assert non_dominated(points) == dominated_by_any(points)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for p in points:
        study.add_trial(optuna.trial.create_trial(values=list(p)))
    optuna_front = {t.number for t in study.best_trials}
    assert {i for i, on in enumerate(non_dominated(points)) if on} == optuna_front


def test_pareto_front_of_the_memory_is_evaluated_candidates_only_best_first() -> None:
    arch = SPACE.complete(REF)

    def record(n: int, status: str, score: float | None, ms: float | None) -> TrialRecord:
        return TrialRecord(n, 0, n, "p", status, arch=arch, score=score, latency_ms=ms, gmacs=0.05)  # type: ignore[arg-type]

    memory = [
        record(0, "complete", 10.0, 5.0),
        record(1, "complete", 8.0, 7.0),
        record(2, "complete", 12.0, 6.0),  # dominated by 0
        record(3, "rejected", None, 1.0),  # fastest, but never scored
        record(4, "pruned", 1.0, 1.0),  # a lower fidelity's score: not comparable
        record(5, "complete", 20.0, 2.0),
    ]
    assert [t.number for t in pareto_front(memory, "latency")] == [1, 0, 5]
    assert [t.number for t in pareto_front(memory, "macs")] == [1]  # equal GMACs: best score
