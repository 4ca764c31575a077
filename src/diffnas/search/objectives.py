"""What a search minimises beyond the proxy score: measured latency and the Pareto front.

- `latency_meter`: how the gate measures latency when the search needs it (a latency objective
  or `--budget-latency-ms`): as the proxy evaluations' sampler runs, on their device and thread
  count unless the latency options say otherwise, cached in the `--runs` folder's
  cache/latency/ (shared by the searches there);
- `promoted`: who the final recipe trains - the best by score, or with two objectives members
  of the Pareto front spread along it;
- `objective_summary`: summary.json's front and how latency was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffnas.data.datasets import DataSpec
from diffnas.gate.check import LatencyCheck
from diffnas.gate.memory import TrialRecord, best_first, pareto_front
from diffnas.search.config import SearchConfig
from diffnas.space.search_space import SearchSpace
from diffnas.train.device import resolve_device
from diffnas.train.latency import LatencyMeter, Measure


def latency_cache_dir(run_dir: Path) -> Path:
    """Measurements shared by the searches under one `--runs` folder (as the reference stats)."""
    return Path(run_dir).parent / "cache" / "latency"


def latency_meter(
    config: SearchConfig,
    space: SearchSpace,
    data: DataSpec,
    run_dir: Path,
    threads: int | None = None,
    measure: Measure | None = None,
) -> LatencyMeter | None:
    """The search's latency meter, or None when it measures none. `threads`: the CPU threads of
    one evaluation (a pool's share); `measure`: a stand-in for the timing (tests)."""
    if not config.measures_latency:
        return None
    options = config.latency
    device = options.device if options.device != "auto" else config.proxy.device
    recipe = config.proxy.train_recipe(space.objective, data.kind, resolve_device(device).type)
    settings = options.resolve(
        default_device=config.proxy.device, recipe=recipe, default_threads=threads
    )
    return LatencyMeter(settings, latency_cache_dir(run_dir), measure)


def latency_check(config: SearchConfig, meter: LatencyMeter | None) -> LatencyCheck | None:
    """What the gate gets: the meter, the bound (if any) and the settings in words."""
    if meter is None:
        return None
    return LatencyCheck(
        measure=meter, budget_ms=config.latency_budget_ms, conditions=meter.settings.conditions()
    )


def latency_record(config: SearchConfig, meter: LatencyMeter) -> dict[str, Any]:
    """How latency was measured, and how often (summary.json, the start event)."""
    return {
        "settings": meter.settings.model_dump(),
        "device_name": meter.device_name,
        "measured": meter.misses,
        "cached": meter.hits,
        "budget_ms": config.latency_budget_ms,
    }


def promoted(config: SearchConfig, memory: list[TrialRecord]) -> list[TrialRecord]:
    """Who is trained with the final recipe: the `promote` best by score, or with two
    objectives up to `promote` members of the Pareto front spread along it (the best score
    first, then evenly on to the cheapest)."""
    k, objective = config.promote, config.cost_objective
    if objective is None:
        return best_first(memory)[:k]
    front = pareto_front(memory, objective)
    if k <= 1 or len(front) <= k:
        return front[:k]
    picks = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
    return [front[i] for i in picks]


def objective_summary(
    config: SearchConfig, memory: list[TrialRecord], meter: LatencyMeter | None
) -> dict[str, Any]:
    """summary.json's part: with two objectives the front; with measured latency, how."""
    out: dict[str, Any] = {}
    objective = config.cost_objective
    if objective is not None:
        out["objectives"] = list(config.objectives)
        out["front"] = [
            {
                "trial": t.number,
                "score": t.score,
                "latency_ms": t.latency_ms,
                "gmacs": t.gmacs,
                "arch_hash": t.arch.arch_hash() if t.arch else None,
            }
            for t in pareto_front(memory, objective)
        ]
    if meter is not None:
        out["latency"] = latency_record(config, meter)
    return out
