"""The gate before training: parse, space membership, duplicates, budget - no GPU time spent.

Every reason is one sentence the LLM can act on in its repair turn, and the same sentence is
recorded with a rejected trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffnas.errors import ArchitectureError
from diffnas.gate.memory import TrialRecord, find_duplicate
from diffnas.model.cost import Cost, budget_verdict, measure_cost
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


@dataclass
class Verdict:
    """What the check says of one raw proposal."""

    arch: ArchConfig | None  # parsed and in the space (None if not)
    cost: Cost | None  # measured when the architecture parsed
    reason: str | None  # None = acceptable; else one sentence for the model and the record

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_candidate(
    raw: Any,
    space: SearchSpace,
    memory: list[TrialRecord],
    accepted: list[ArchConfig],
    admit: Callable[[ArchConfig], str | None] | None = None,
) -> Verdict:
    """Verdict on one raw proposal against the space, the memory, this round so far and the
    budget; then `admit`, what the evaluation can take (a table holds only its architectures:
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
    ok, sentence = budget_verdict(cost, space.budget)
    if ok and admit is not None:
        refused = admit(arch)
        if refused is not None:
            return Verdict(arch=arch, cost=cost, reason=refused)
    return Verdict(arch=arch, cost=cost, reason=None if ok else sentence)
