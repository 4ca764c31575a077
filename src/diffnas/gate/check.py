"""The gate before training: parse, space membership, duplicates, budget - no GPU time spent.

Every reason is one sentence the LLM can act on in its repair turn, and the same sentence is
recorded with a rejected trial.
"""

from __future__ import annotations

from typing import Any

from diffnas.errors import ArchitectureError
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.propose.base import Verdict
from diffnas.search.memory import TrialRecord, find_duplicate
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


def check_candidate(
    raw: Any, space: SearchSpace, memory: list[TrialRecord], accepted: list[ArchConfig]
) -> Verdict:
    """Verdict on one raw proposal against the space, the memory, this round so far and the budget."""
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
    return Verdict(arch=arch, cost=cost, reason=None if ok else sentence)
