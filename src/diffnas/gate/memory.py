"""The search memory as proposers see it: one `TrialRecord` per candidate ever proposed.

The Optuna study (`diffnas.search.study`) is where it is stored; this is the plain-data view
that prompts, baselines and reports read. It lives below `propose/` and `search/` so that
both read it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from diffnas.space.arch import ArchConfig

# What a search minimises: the proxy score alone, or it and one cost (`--objectives`).
Objective = Literal["score", "latency", "macs"]
OBJECTIVES: tuple[str, ...] = ("score", "latency", "macs")

TrialStatus = Literal[
    "pending",
    "running",
    "complete",
    "pruned",
    "rejected",
    "diverged",
    "oom",
    "failed",
    "screened-out",
]
#: Candidates that never went to training: refused by the gate, or ranked below the K slots by
#: a screener (`--screen`). Neither is a measurement, so neither makes a later proposal of the
#: same architecture a duplicate.
UNTRAINED: tuple[str, ...] = ("rejected", "screened-out")


@dataclass
class TrialRecord:
    number: int  # Optuna trial number: the candidate's id everywhere ("trial 7")
    round: int
    slot: int  # position in its round's proposal list
    proposer: str
    status: TrialStatus
    arch: ArchConfig | None = None  # None when the proposal never parsed into an architecture
    raw: Any = None  # what the proposer gave, verbatim (for rejected ones)
    rationale: str = ""
    reason: str = ""  # why it was rejected / failed
    gmacs: float | None = None
    params_m: float | None = None
    latency_ms: float | None = None  # measured at the gate (a latency objective or budget)
    score: float | None = None  # proxy score (RFID or KID), lower is better; when "pruned",
    # the score at the lower fidelity it reached (`fidelity`), so not comparable with the rest
    score_name: str = "rfid"
    # how the proposal was made: "llm", "llm-edit", "fallback", "warm-start" or the baseline's
    # name; set once, when the proposal becomes a round entry (`gate.entry.origin_of`)
    origin: str | None = None
    scores: dict[str, Any] | None = None  # every score of the evaluation with its protocol
    train: dict[str, Any] | None = None  # the training's summary (steps, last loss, images/s)
    eval_dir: str | None = None  # the evaluation's folder (trials/NNNNN of its run)
    device: str | None = None  # where it was evaluated ("cpu", "cuda:0", "table")
    device_s: float | None = None  # seconds of that device (wall seconds before it was measured)
    fidelity: tuple[int, int] | None = None  # pruned: (steps reached, steps of the proxy run)
    screen: dict[str, Any] | None = None  # --screen: the screener's verdict (`ScreenMark`)
    warm_start: dict[str, Any] | None = None  # imported: where it was measured (run, trial)
    measured_on: str | None = None  # imported from a search on other data: that data's name

    @property
    def evaluated(self) -> bool:
        """Scored at the full proxy fidelity (a pruned candidate was scored lower down)."""
        return self.status == "complete" and self.score is not None

    def cost(self, objective: str) -> float | None:
        """The second objective's value: measured latency (ms) or GMACs."""
        return self.latency_ms if objective == "latency" else self.gmacs

    @property
    def predicted(self) -> float | None:
        """The score a screener predicted for this candidate before training (`--screen`)."""
        value = (self.screen or {}).get("predicted")
        return float(value) if value is not None else None


def best_first(memory: list[TrialRecord]) -> list[TrialRecord]:
    """The evaluated candidates, best (lowest score) first; ties keep trial order."""
    return sorted((t for t in memory if t.evaluated), key=lambda t: t.score)  # type: ignore[arg-type, return-value]


def find_duplicate(memory: list[TrialRecord], arch: ArchConfig) -> TrialRecord | None:
    """An earlier proposal of the same architecture that was (or is being) evaluated."""
    key = arch.key()
    for t in memory:
        if t.arch is not None and t.status not in UNTRAINED and t.arch.key() == key:
            return t
    return None


def non_dominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (score, cost) points no other point dominates (as low or lower on both, lower on
    one); equal points share their verdict. One sweep in score order: a point is on the front
    when it costs less than every point with a lower (or equal and cheaper) score."""
    on_front = [False] * len(points)
    cheapest = float("inf")
    previous: int | None = None
    for i in sorted(range(len(points)), key=lambda i: points[i]):
        if previous is not None and points[i] == points[previous]:
            on_front[i] = on_front[previous]
        else:
            on_front[i] = points[i][1] < cheapest
            cheapest = min(cheapest, points[i][1])
        previous = i
    return on_front


def pareto_front(memory: list[TrialRecord], objective: str) -> list[TrialRecord]:
    """The evaluated candidates no other one beats on both the score and `objective`'s cost
    ("latency" or "macs"), best score first."""
    scored = [t for t in best_first(memory) if t.cost(objective) is not None]
    points = [(float(t.score), float(t.cost(objective))) for t in scored]  # type: ignore[arg-type]
    return [t for t, on in zip(scored, non_dominated(points)) if on]
