"""The gate between proposing and training, below both `propose/` and `search/`.

- `memory`: `TrialRecord`, one per candidate ever proposed (what proposers and reports read);
- `check`: `check_candidate` → `Verdict` (parse, space, duplicates, budget; no training);
- `entry`: `RoundEntry`, one proposal with its verdict as the round file and the study store it.
"""

from __future__ import annotations

from diffnas.gate.check import Verdict, check_candidate
from diffnas.gate.entry import RoundEntry, RoundFile
from diffnas.gate.memory import TrialRecord, TrialStatus, best_first, find_duplicate

__all__ = [
    "RoundEntry",
    "RoundFile",
    "TrialRecord",
    "TrialStatus",
    "Verdict",
    "best_first",
    "check_candidate",
    "find_duplicate",
]
