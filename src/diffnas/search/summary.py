"""The shapes of a search's own records, as `diffnas status`, `report` and `--resume` read them
back: `summary.json` (`SearchSummary`) and `env.json` (a list of `EnvEntry`).

The loop writes plain dicts; these models are what a reader may rely on, so a damaged file is
refused by name (`diffnas.runs.read_file`) rather than shown as a wrong table. Unknown keys
are kept (`extra="allow"`): a newer diffnas may add some.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from diffnas.execute.job import EvalResult
from diffnas.layout import SUMMARY_FILE as SUMMARY_FILE  # the search writes it by this name

ENV_FILE = "env.json"


class FinalEntry(EvalResult):
    """One promoted candidate: its final training's `EvalResult` and its proxy score."""

    model_config = ConfigDict(extra="allow")

    trial: int = Field(ge=0, description="the candidate's trial number")
    proxy_score: float | None = Field(None, description="its proxy score, which promoted it")


class LLMTotals(BaseModel):
    """What the LLM cost the whole search (`CostLedger.summary`)."""

    model_config = ConfigDict(extra="allow")

    calls: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)


class SearchSummary(BaseModel):
    """`summary.json`: written when a search ends (and again by each `--resume`)."""

    model_config = ConfigDict(extra="allow")

    stop_reason: str = Field(description="why the search stopped proposing")
    trials: int = Field(ge=0, description="candidates in the study")
    status_counts: dict[str, int] = Field(default_factory=dict, description="status -> count")
    origins: dict[str, int] = Field(
        default_factory=dict, description="trained candidates per origin (llm, fallback, ...)"
    )
    best_trial: int | None = Field(None, ge=0)
    best_score: float | None = None
    final: list[FinalEntry] = Field(default_factory=list, description="the promoted candidates")
    compute: dict[str, float] = Field(
        default_factory=dict, description="device-hours: cpu_hours, gpu_hours"
    )
    llm: LLMTotals | None = Field(None, description="the LLM ledger's totals; None: no LLM")
    rounds_failed: int = Field(0, ge=0, description="requests the LLM failed (unavailable)")


class EnvEntry(BaseModel):
    """One start or resume of a search: versions, device and seed (`env.json` lists them)."""

    model_config = ConfigDict(extra="allow")

    diffnas: str
    python: str
    torch: str
    seed: int


ENV_HISTORY: TypeAdapter[list[EnvEntry]] = TypeAdapter(list[EnvEntry])
