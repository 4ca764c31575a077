"""The gate before training: parse, space membership, duplicates, budget - no GPU time spent.

Every reason is one sentence the LLM can act on in its repair turn, and the same sentence is
recorded with a rejected trial.

The budget is the space's GMACs band, or, with a latency budget (`LatencyCheck.budget_ms`,
`diffnas search --budget-latency-ms`), the measured latency of one forward pass instead of it
(the space's parameter bound still applies). The latency is measured here, after the cheap
checks, for a latency budget or a latency objective; the measurement is cached per
architecture (`diffnas.train.latency.LatencyMeter`), so asking again costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffnas.errors import ArchitectureError
from diffnas.gate.memory import TrialRecord, find_duplicate
from diffnas.model.cost import Cost, budget_verdict, measure_cost
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import Budget, SearchSpace


@dataclass
class Verdict:
    """What the check says of one raw proposal."""

    arch: ArchConfig | None  # parsed and in the space (None if not)
    cost: Cost | None  # measured when the architecture parsed
    reason: str | None  # None = acceptable; else one sentence for the model and the record
    latency_ms: float | None = None  # measured when the gate has a `LatencyCheck` and got to it

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class LatencyCheck:
    """What the gate knows of latency: how to measure it, and the bound when it is one."""

    measure: Callable[[ArchConfig], float]  # ms per forward pass (a cached `LatencyMeter`)
    budget_ms: float | None = None  # the bound that replaces the GMACs band; None: none
    conditions: str = ""  # the measurement in words: "batch 1, cpu, fp32, 2 threads"


def latency_verdict(ms: float, check: LatencyCheck) -> tuple[bool, str]:
    """(within the latency bound?, one sentence with the measured value and the bound)."""
    measured = f"measured {ms:.3g} ms per forward pass" + (
        f" ({check.conditions})" if check.conditions else ""
    )
    bound = check.budget_ms
    if bound is None:
        return True, measured
    if ms > bound:
        return False, f"{measured}, {100 * (ms / bound - 1):.0f}% over the {bound:g} ms bound"
    return True, f"{measured}, within the {bound:g} ms bound ({100 * ms / bound:.0f}% of it)"


def within_budget(
    arch: ArchConfig, cost: Cost, budget: Budget, latency: LatencyCheck | None = None
) -> tuple[bool, str, float | None]:
    """(within budget?, the sentence, the measured latency or None) for a parsed candidate.

    Without a latency bound the budget is the GMACs band (and the latency is measured only for
    a candidate inside it, when `latency` is given for an objective); with one, the latency
    replaces the band and the parameter bound alone is checked before measuring."""
    if latency is None or latency.budget_ms is None:
        ok, sentence = budget_verdict(cost, budget)
        return ok, sentence, latency.measure(arch) if ok and latency is not None else None
    unbanded = budget.model_copy(update={"min_gmacs": 0.0, "max_gmacs": math.inf})
    ok, sentence = budget_verdict(cost, unbanded)
    if not ok:
        return False, sentence, None  # over the parameter bound: nothing to time
    ms = latency.measure(arch)
    ok, sentence = latency_verdict(ms, latency)
    return ok, sentence, ms


def check_candidate(
    raw: Any,
    space: SearchSpace,
    memory: list[TrialRecord],
    accepted: list[ArchConfig],
    latency: LatencyCheck | None = None,
    *,
    admit: Callable[[ArchConfig], str | None] | None = None,
) -> Verdict:
    """Verdict on one raw proposal against the space, the memory, this round so far and the
    budget (`latency`: measured for a latency objective, and the bound when it has one); then
    `admit`, what the evaluation can take (a table holds only its architectures:
    `Executor.admits`), which returns None or the reason."""
    try:
        arch = space.complete(raw)
    except ArchitectureError as err:
        return Verdict(arch=None, cost=None, reason=str(err))
    earlier = find_duplicate(memory, arch)
    if earlier is not None:
        return Verdict(arch=arch, cost=None, reason=f"same architecture as trial {earlier.number}")
    for i, other in enumerate(accepted):
        if other.key() == arch.key():
            return Verdict(
                arch=arch, cost=None, reason=f"same architecture as candidate {i + 1} of this round"
            )
    cost = measure_cost(arch)
    ok, sentence, ms = within_budget(arch, cost, space.budget, latency)
    if ok and admit is not None:
        refused = admit(arch)
        if refused is not None:
            return Verdict(arch=arch, cost=cost, reason=refused, latency_ms=ms)
    return Verdict(arch=arch, cost=cost, reason=None if ok else sentence, latency_ms=ms)
