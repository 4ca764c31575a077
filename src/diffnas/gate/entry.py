"""One proposal of a round with its gate verdict: the one shape of a candidate before training.

A round file `rounds/round-RRR.json` is a `RoundFile`; the search's requests to the proposer
(`diffnas.search.requests`) build its `RoundEntry`s at the gate, and `diffnas.search.study`
stores each as an Optuna trial's user attrs. Round files written by earlier versions load
unchanged (same keys; `origin` may be absent, or only in `meta`).

Under `--screen` an accepted entry also carries its screener's verdict (`ScreenMark`): it is
written with the round before any trial exists, so a resumed or replayed search trains exactly
what was selected.

"Origin", how a proposal was made, has its one home here: the names below, and `origin_of`,
which sets it once when a proposal becomes a `RoundEntry`; every reader (the study's trial
attrs, `TrialRecord.origin`, summaries and reports) reads that field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffnas.runs import read_file
from diffnas.space.arch import ArchConfig

_JSON_LEAVES = (dict, list, str, int, float, bool)

ORIGIN_LLM = "llm"  # a whole architecture written by the model
ORIGIN_EDIT = "llm-edit"  # an edit of a remembered architecture chosen by the model
ORIGIN_FALLBACK = "fallback"  # drawn without the model, for a slot it could not fill
ORIGINS = (ORIGIN_LLM, ORIGIN_EDIT, ORIGIN_FALLBACK)  # an LLM proposer's, listed even at 0
ORIGIN_WARM_START = "warm-start"  # measured by an earlier search, imported (`--warm-start`)


def origin_of(origin: str | None, proposer: str, llm_search: bool) -> str:
    """Where a candidate came from: the proposer's word, else "llm" in a search with an LLM
    proposer (round files written before origins were recorded) or the baseline's own name."""
    if origin:
        return origin
    return ORIGIN_LLM if llm_search else proposer


class ScreenMark(BaseModel):
    """What a screener (`--screen`) said of an accepted candidate before any training."""

    model_config = ConfigDict(extra="ignore")

    screener: str  # "llm", "gp", "llm+gp" (or a test's stub)
    predicted: float | None = None  # its predicted score (lower is better); None: no prediction
    rank: int  # 1 = the screener's first choice among the request's accepted candidates
    selected: bool  # among the top K: evaluated; False: recorded as screened-out, never trained
    note: str = ""  # e.g. "GP mean 41.2 +- 3.1, EI 0.8" or "vetoed by the GP"


class RoundEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    slot: int  # position in its round's proposal list
    proposer: str
    origin: str | None = (
        None  # "llm", "llm-edit", "fallback" or a baseline's name; None: not recorded
    )
    rationale: str = ""
    raw: Any = None  # what the proposer gave, verbatim when JSON, else its repr
    arch: ArchConfig | None = None  # None when the proposal never parsed into the space
    reason: str | None = None  # None = accepted; else why the gate rejected it
    gmacs: float | None = None
    params_m: float | None = None
    # measured at the gate (a latency objective or budget); left out of files when not measured
    latency_ms: float | None = Field(None, exclude_if=lambda v: v is None)
    meta: dict[str, Any] = Field(default_factory=dict)
    screen: ScreenMark | None = None  # set when a screener ranked this accepted candidate

    @model_validator(mode="before")
    @classmethod
    def _origin_from_meta(cls, data: Any) -> Any:
        """Entries written before `origin` was a field carry it in `meta.origin`."""
        if isinstance(data, dict) and not data.get("origin"):
            meta = data.get("meta")
            if isinstance(meta, dict) and isinstance(meta.get("origin"), str):
                data = {**data, "origin": meta["origin"]}
        return data

    @field_validator("raw", mode="before")
    @classmethod
    def _storable_raw(cls, raw: Any) -> Any:
        return raw if raw is None or isinstance(raw, _JSON_LEAVES) else repr(raw)

    @property
    def accepted(self) -> bool:
        """Passed the gate (it is trained unless a screener ranks it below the K slots)."""
        return self.reason is None

    @property
    def screened_out(self) -> bool:
        """Passed the gate, but a screener ranked it below the K slots: never trained."""
        return self.accepted and self.screen is not None and not self.screen.selected

    def trial_attrs(self, round_index: int, score_name: str) -> dict[str, Any]:
        """The Optuna user attrs of this candidate's trial (kept small: Optuna stores them as text)."""
        return {
            "round": round_index,
            "slot": self.slot,
            "proposer": self.proposer,
            "origin": self.origin,
            "rationale": self.rationale[:500],
            "raw": json.dumps(self.raw)[:4000],
            "arch": self.arch.model_dump() if self.arch is not None else None,
            "arch_hash": self.arch.arch_hash() if self.arch is not None else None,
            "gmacs": self.gmacs,
            "params_m": self.params_m,
            "latency_ms": self.latency_ms,  # None (not stored) unless measured
            "score_name": score_name,
            "reason": self.reason,
            "screen": self.screen.model_dump() if self.screen is not None else None,
        }


class RoundFile(BaseModel):
    """`rounds/round-RRR.json`: a round's proposals, written before any of its trials exists."""

    model_config = ConfigDict(extra="ignore")

    round: int
    proposer: str
    entries: list[RoundEntry]
    asked: int | None = None  # candidates asked for (files from before it was recorded: None)
    seen: list[int] | None = None  # finished trials whose outcome the request showed
    # --screen: the screener, how many candidates were obtained for the `asked` slots, and what
    # it said of the request as a whole (e.g. why it kept the proposer's order)
    screening: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: Path) -> RoundFile | None:
        """The round file at `path`, or None when that request was never made; a damaged one
        is a `UserError` naming the file and the field (it is written atomically: damage is
        not a kill's doing, and a round asked again would not be the one its trials hold)."""
        if not path.is_file():
            return None
        return read_file(path, cls, "round file", fix="restore it from a copy of the run folder")
