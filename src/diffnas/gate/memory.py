"""The search memory as proposers see it: one `TrialRecord` per candidate ever proposed.

The Optuna study (`diffnas.search.study`) is where it is stored; this is the plain-data view
that prompts, baselines and reports read. It lives below `propose/` and `search/` so that
both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffnas.space.arch import ArchConfig

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
    score: float | None = None  # proxy score (RFID or KID), lower is better; when "pruned",
    # the score at the lower fidelity it reached (`fidelity()`), so not comparable with the rest
    score_name: str = "rfid"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluated(self) -> bool:
        """Scored at the full proxy fidelity (a pruned candidate was scored lower down)."""
        return self.status == "complete" and self.score is not None

    @property
    def predicted(self) -> float | None:
        """The score a screener predicted for this candidate before training (`--screen`)."""
        value = (self.extra.get("screen") or {}).get("predicted")
        return float(value) if value is not None else None

    def fidelity(self) -> tuple[int, int] | None:
        """(training steps reached, steps of the whole proxy run) of a pruned candidate."""
        f = self.extra.get("fidelity")
        return (int(f["steps"]), int(f["of"])) if isinstance(f, dict) else None


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
