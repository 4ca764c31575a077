"""A search's own records, as `diffnas status`, `report` and `--resume` read them back:
`summary.json` (`SearchSummary`, built by `search_summary` when the search ends) and `env.json`
(a list of `EnvEntry`, one per start or resume: `env_history`, `write_env`).

The loop writes plain dicts; these models are what a reader may rely on, so a damaged file is
refused by name (`diffnas.runs.read_file`) rather than shown as a wrong table. Unknown keys
are kept (`extra="allow"`): a newer diffnas may add some.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from diffnas import __version__
from diffnas.execute.accounting import compute_hours
from diffnas.execute.job import EvalResult
from diffnas.gate.memory import TrialRecord, best_first
from diffnas.layout import ENV_FILE
from diffnas.layout import SUMMARY_FILE as SUMMARY_FILE  # the search writes it by this name
from diffnas.runs import read_file, write_json
from diffnas.search import objectives, screening
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.train.latency import LatencyMeter

ENV_FIX = "it only records the versions and seed of each start: delete it and resume again"


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


def env_history(run_dir: Path) -> list[dict[str, Any]]:
    """env.json's entries so far (none for a new search), checked."""
    env_file = run_dir / ENV_FILE
    if not env_file.exists():
        return []
    recorded = read_file(env_file, ENV_HISTORY, "search environment record", fix=ENV_FIX)
    return [e.model_dump(mode="json") for e in recorded]


def write_env(run_dir: Path, history: list[dict[str, Any]], seed: int) -> None:
    """env.json: `history` and this start's versions, device and seed (an entry per start)."""
    import diffusers
    import optuna
    import torch

    env = {
        "diffnas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "optuna": optuna.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "seed": seed,
    }
    write_json(run_dir / ENV_FILE, [*history, env])


def search_summary(
    config: SearchConfig,
    memory: list[TrialRecord],
    finals: list[dict[str, Any]],
    *,
    stop_reason: str,
    llm_totals: dict[str, Any] | None,
    llm_origins: tuple[str, ...],
    rounds_failed: int,
    meter: LatencyMeter | None,
) -> dict[str, Any]:
    """summary.json of a search that ended: its trials (`memory`), the promoted ones' final
    results (`finals`), its compute and LLM cost; checked against `SearchSummary` as it is
    built. `llm_origins`: the origins listed even at 0 (an LLM proposer's own, edits, fallback)."""
    counts: dict[str, int] = {}
    for t in memory:
        counts[t.status] = counts.get(t.status, 0) + 1
    best = best_first(memory)
    summary = {
        "stop_reason": stop_reason,
        "trials": len(memory),
        "status_counts": counts,
        # trained (not rejected) candidates per origin: the LLM's own, its edits, fallbacks
        "origins": study_mod.origin_counts(memory, llm_origins),
        "best_trial": best[0].number if best else None,
        "best_score": best[0].score if best else None,
        "final": finals,
        # the search's compute: proxy evaluations and final trainings, in device-hours
        "compute": compute_hours(
            [(t.device, t.device_s) for t in memory]
            + [(f.get("device"), f.get("device_s")) for f in finals]
        ),
        "llm": llm_totals,
        "rounds_failed": rounds_failed,
        **objectives.objective_summary(config, memory, meter),
        # --screen: each screener's Kendall tau of predicted vs measured, per round and all
        "screening": screening.screening_summary(memory),
        "warm_start": sum(1 for t in memory if t.warm_start),
    }
    # the shape readers rely on (`status`, `report`): checked as it is written
    return SearchSummary.model_validate(summary).model_dump(mode="json")
