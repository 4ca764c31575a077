"""The proposer interface: every method (LLM or baseline) fills a round the same way.

A proposer returns `Proposal`s. It may call `ctx.check(raw)` (`diffnas.gate.check`) as often as it likes: the
check validates a raw dict against the space, dedupes against the memory and the round so
far, and measures cost against the budget - all without training. An LLM proposer feeds the
check's sentence back to the model in a repair turn; a baseline simply draws again.
The search loop checks every returned proposal once more, so a proposer cannot slip an
invalid or over-budget candidate into training.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffnas.gate.check import LatencyCheck, Verdict
from diffnas.gate.memory import TrialRecord
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


@dataclass
class Proposal:
    raw: Any  # the proposer's own output for this candidate (dict, or text that did not parse)
    rationale: str = ""
    verdict: Verdict | None = None  # the last check's verdict
    proposer: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. repair turns used


@dataclass
class ProposalContext:
    space: SearchSpace
    memory: list[TrialRecord]  # every earlier candidate, in trial order
    round: int  # 0-based
    num_rounds: int
    k: int  # candidates wanted this round
    rng: random.Random  # seeded per (search seed, round): proposals are reproducible
    check: Callable[
        [Any, list[ArchConfig]], Verdict
    ]  # (raw, accepted so far this round) -> verdict
    task: str = ""  # dataset, resolution, objective in words
    reference_line: str = ""  # the reference architecture and its cost, in words
    score_name: str = "rfid"
    objectives: tuple[str, ...] = ("score",)  # ("score", "latency"|"macs"): two objectives
    latency: LatencyCheck | None = None  # measured latency: for an objective or the budget
    evaluations: int = 0  # candidates the whole search evaluates (rounds x K); 0: not known

    @property
    def cost_objective(self) -> str | None:
        """The second objective ("latency" or "macs"), None when the score is the only one."""
        return self.objectives[1] if len(self.objectives) > 1 else None

    @property
    def latency_budget_ms(self) -> float | None:
        return self.latency.budget_ms if self.latency is not None else None


class Proposer(ABC):
    """Fills one round with up to `ctx.k` proposals."""

    name: str = "base"

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> list[Proposal]: ...
