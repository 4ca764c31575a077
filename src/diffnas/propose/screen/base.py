"""The screener interface: rank a request's accepted candidates before any of them is trained.

Under `--screen M` a request obtains M candidates for its K slots; those that pass the gate go
to a `Screener`, which returns a `Ranking`: an order (its first choice first), a predicted score
per candidate (lower is better, on the search's score scale; None where it predicts nothing)
and a note per candidate. The search trains the first K of the order and records the rest as
screened-out with their prediction (`diffnas.search.screening`).

A screener reads the search memory (`TrialRecord`s: measured trials, warm-start trials,
earlier screened-out ones with their predictions) and nothing else; it never trains. Every
screener passes the one conformance suite (`tests/test_screen_conformance.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from diffnas.gate.memory import TrialRecord
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


@dataclass(frozen=True)
class Candidate:
    """An accepted candidate waiting for a slot, with the cost the gate measured."""

    arch: ArchConfig
    gmacs: float | None = None
    params_m: float | None = None


@dataclass
class ScreenContext:
    space: SearchSpace
    memory: list[TrialRecord]  # every earlier candidate, in trial order
    candidates: list[Candidate]  # the request's accepted candidates, in the proposer's order
    k: int  # slots: how many of them will be trained
    seed: int  # seeds the LLM request and the GP's optimizer restarts: a request reproduces
    score_name: str = "rfid"
    task: str = ""  # dataset, resolution, objective in words (the LLM's prompt)
    reference_line: str = ""  # the reference architecture and its cost (the LLM's prompt)


@dataclass
class Ranking:
    """A screener's answer for one request."""

    order: list[int]  # candidate indices, its first choice first: a permutation of them all
    predicted: list[float | None]  # per candidate (in the candidates' order)
    notes: list[str] = field(default_factory=list)  # per candidate; empty: no notes
    info: str = ""  # about the request as a whole, e.g. why the proposer's order was kept

    def note(self, index: int) -> str:
        return self.notes[index] if index < len(self.notes) else ""


#: How a screener that cannot judge ends its `info` (the hybrid replaces it with what it does).
ORDER_KEPT = ": the proposer's order is kept"


def proposer_order(ctx: ScreenContext, info: str) -> Ranking:
    """The proposer's own order, no predictions: what a screener answers when it cannot judge."""
    n = len(ctx.candidates)
    return Ranking(order=list(range(n)), predicted=[None] * n, notes=[""] * n, info=info)


def order_by(values: list[float]) -> list[int]:
    """Indices by ascending value; ties keep the proposer's order."""
    return sorted(range(len(values)), key=lambda i: (values[i], i))


class Screener(ABC):
    """Ranks a request's accepted candidates from the search memory, without training them."""

    name: str = "base"

    @abstractmethod
    def rank(self, ctx: ScreenContext) -> Ranking: ...
