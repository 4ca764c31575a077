"""Screening before training and warm start, measured on a tabulated benchmark.

    python benchmarks/bench_screening.py micro-digits                  # the bundled micro table
    python benchmarks/bench_screening.py runs/00004-tabulate-micro/micro-digits --seeds 20
    python benchmarks/bench_screening.py TABLE --llm openai:gpt-4o-mini   # your own model

Every search runs against the table (`--executor table:TABLE`): each evaluation is a lookup,
so only the LLM's calls take time. Five conditions, `--seeds` searches each (20 by default),
the same evaluation budget each (`--rounds` x `--per-round`, 5 x 2 by default):

- `no-screen`: the proposer as it is (diffnas with the embedded model by default);
- `screen-llm`, `screen-gp`, `screen-llm+gp`: `--screen M` with that screener (M = `--screen`);
- `warm-start`: no screening, warm-started (`--warm-start`) from a search of the same
  proposer on another seed (seed + 1000; its own evaluations are not counted).

Reported per condition, as means over the seeds with 95 % bootstrap intervals (scipy's
`stats.bootstrap`, percentile, resampling the searches):
- evaluations to the first top-3 architecture (by the table's mean reference score): this
  search's evaluations up to and including the first of the table's three best; 0 when a
  warm start brought one in; a search that never evaluates one counts as budget + 1 (so the
  mean is a lower bound; the table says in how many searches one was found);
- regret of the returned architecture: the table's reference score of the search's best by
  proxy (what `diffnas search` hands back, warm-start trials included) minus the optimum's;
- the screener's Kendall tau, twice: in the search (predicted against measured, the
  candidates it let through, from summary.json) and over every candidate it predicted,
  screened-out ones included, against the table's mean proxy score (scipy).

Run folders go to `--out` (default `bench-screening/`); a search whose folder holds a
summary.json is read, not run again, so the study resumes across sittings. Results:
`--out/results.json` and a Markdown table on stdout; `--plot PNG` draws regret against
evaluations with bands.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from scipy import stats

from diffnas.errors import UserError
from diffnas.execute.table import REFERENCE, Table, bundled_tables
from diffnas.gate.memory import best_first
from diffnas.runs import read_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SUMMARY_FILE, SearchRun
from diffnas.search.plan import SearchPlan
from diffnas.space.search_space import list_presets, load_space

DEFAULT_TABLE = "micro-digits"
CONDITIONS = ("no-screen", "screen-llm", "screen-gp", "screen-llm+gp", "warm-start")
TOP = 3  # "a top-3 architecture"
WARM_SEED_OFFSET = 1000
TRAINED = ("complete", "pruned", "diverged", "oom", "failed")


def data_options(table: Table) -> dict[str, Any]:
    """The search's --data options that name the table's images."""
    data = table.meta.data
    spelling = f"{data.kind}:{data.path}" if data.path else data.kind
    return {"data": spelling, "data_subset": data.subset, "data_image_size": data.image_size}


def proxy_setting(table: Table, name: str | None) -> Any:
    proxies = table.settings("proxy")
    if not proxies:
        raise UserError(f"table {table.name!r} has no proxy setting", field="setting")
    if name is None:
        return proxies[0]
    for setting in proxies:
        if setting.name == name:
            return setting
    raise UserError(
        f"--setting {name!r}: table {table.name!r} has {', '.join(s.name for s in proxies)}",
        field="setting",
    )


def search_config(
    args: argparse.Namespace, table_source: str, setting: Any, table: Table, seed: int,
    condition: str, warm_from: Path | None = None,
) -> SearchConfig:  # fmt: skip
    screen = condition.startswith("screen-")
    return SearchConfig(
        space=args.space,
        **data_options(table),
        executor=f"table:{table_source}",
        proposer=args.proposer,
        llm=args.llm,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        rounds=args.rounds,
        per_round=args.per_round,
        seed=seed,
        promote=0,  # the table's reference is what the returned architecture is judged by
        proxy=setting.spec,
        screen=args.screen if screen else None,
        screener=condition.removeprefix("screen-") if screen else "gp",
        warm_start=[str(warm_from)] if warm_from is not None else [],
    )


def space_option(table: Table, out: Path) -> str:
    """The --space that is the table's space: its preset, or a YAML file of it in `out`."""
    space = table.meta.space
    if space.name in list_presets() and load_space(space.name) == space:
        return space.name
    path = out / f"{space.name}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    return str(path)


def run_search(config: SearchConfig, run_dir: Path) -> dict[str, Any]:
    """The search's summary: read from its folder when it finished before, else run now."""
    if (run_dir / SUMMARY_FILE).is_file():
        return read_json(run_dir / SUMMARY_FILE)
    return SearchRun(config, run_dir, console=Console(quiet=True)).run()


def memory_of(run_dir: Path) -> list[Any]:
    return study_mod.load_memory(study_mod.open_study(run_dir))


def evaluations_to_top(memory: list[Any], table: Table, top: int = TOP) -> int | None:
    """This search's evaluations up to the first of the table's `top` best (0: a warm-start
    trial is one); None when it never evaluated one."""
    if any(t.warm_start and t.arch and _rank(table, t.arch) <= top for t in memory):
        return 0
    evaluated = [t for t in memory if t.status in TRAINED and not t.warm_start]
    for count, t in enumerate(sorted(evaluated, key=lambda t: t.number), start=1):
        if t.arch is not None and _rank(table, t.arch) <= top:
            return count
    return None


def _rank(table: Table, arch: Any) -> int:
    rank = table.rank(arch.arch_hash())
    return rank if rank is not None else 10**9


def regret_curve(memory: list[Any], table: Table) -> list[float]:
    """After each of this search's evaluations, the regret of the architecture it would return."""
    reference = table.mean_scores(REFERENCE)
    optimum = min(reference.values())
    known = [t for t in memory if t.warm_start]
    curve = []
    own = sorted(
        (t for t in memory if t.status in TRAINED and not t.warm_start),
        key=lambda t: t.number,
    )
    for t in own:
        known.append(t)
        best = best_first(known)
        if best:
            curve.append(reference[best[0].arch.arch_hash()] - optimum)
        else:
            curve.append(math.nan)
    return curve


def returned_regret(memory: list[Any], table: Table) -> float | None:
    best = best_first(memory)
    if not best or best[0].arch is None:
        return None
    reference = table.mean_scores(REFERENCE)
    return reference[best[0].arch.arch_hash()] - min(reference.values())


def table_tau(memory: list[Any], table: Table, setting: str) -> float | None:
    """Kendall tau of every prediction against the table's mean proxy score (all screened)."""
    truth = table.mean_scores(setting)
    pairs = [
        (t.predicted, truth[t.arch.arch_hash()])
        for t in memory
        if t.predicted is not None and t.arch is not None and t.arch.arch_hash() in truth
    ]
    if len(pairs) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = float(stats.kendalltau(*zip(*pairs)).statistic)
    return None if math.isnan(tau) else tau


def interval(values: list[float], resamples: int = 2000) -> dict[str, float | int | None]:
    """Mean with a 95 % percentile bootstrap interval over the searches (None: no value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(finite))
    if len(finite) < 2 or min(finite) == max(finite):
        return {"mean": mean, "low": mean, "high": mean, "n": len(finite)}
    result = stats.bootstrap(
        (np.array(finite),), np.mean, confidence_level=0.95, method="percentile",
        n_resamples=resamples, rng=np.random.default_rng(0),
    )  # fmt: skip
    ci = result.confidence_interval
    return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": len(finite)}


def measure(
    run_dir: Path, summary: dict[str, Any], table: Table, setting: str, budget: int
) -> dict:
    memory = memory_of(run_dir)
    to_top = evaluations_to_top(memory, table)
    screening = summary.get("screening") or {}
    in_search = next(iter(screening.values()), {}).get("tau") if screening else None
    return {
        "evaluations_to_top3": to_top,
        "evaluations_to_top3_or_budget": budget + 1 if to_top is None else to_top,
        "regret": returned_regret(memory, table),
        "regret_curve": regret_curve(memory, table),
        "tau_in_search": in_search,
        "tau_table": table_tau(memory, table, setting),
        "evaluations": sum(t.status in TRAINED and not t.warm_start for t in memory),
        "screened_out": sum(t.status == "screened-out" for t in memory),
        "llm_calls": (summary.get("llm") or {}).get("calls", 0),
        "llm_tokens": sum(
            int((summary.get("llm") or {}).get(k, 0))
            for k in ("prompt_tokens", "completion_tokens")
        ),
    }


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "searches": len(rows),
        "found_top3": sum(r["evaluations_to_top3"] is not None for r in rows),
        "evaluations_to_top3": interval([r["evaluations_to_top3_or_budget"] for r in rows]),
        "regret": interval([r["regret"] for r in rows]),
        "tau_in_search": interval([r["tau_in_search"] for r in rows]),
        "tau_table": interval([r["tau_table"] for r in rows]),
        "llm_calls": float(np.mean([r["llm_calls"] for r in rows])) if rows else 0.0,
    }


def text(estimate: dict[str, Any], digits: int = 2) -> str:
    if estimate["mean"] is None:
        return "-"
    return f"{estimate['mean']:.{digits}f} [{estimate['low']:.{digits}f}, {estimate['high']:.{digits}f}]"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"table {results['table']}, proxy setting {results['setting']}, proposer "
        f"{results['proposer']} via {results['llm']}, {results['rounds']} x "
        f"{results['per_round']} evaluations, --screen {results['screen']}, "
        f"{results['seeds']} seeds",
        "",
        "| condition | evaluations to first top-3 | found | regret of returned | "
        "tau in search | tau over all predicted | LLM calls |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, agg in results["conditions"].items():
        lines.append(
            f"| {name} | {text(agg['evaluations_to_top3'], 1)} | {agg['found_top3']}/"
            f"{agg['searches']} | {text(agg['regret'], 3)} | {text(agg['tau_in_search'])} | "
            f"{text(agg['tau_table'])} | {agg['llm_calls']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], rows: dict[str, list[dict]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, searches in rows.items():
        curves = [r["regret_curve"] for r in searches if r["regret_curve"]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        grid = np.array([c + [c[-1]] * (length - len(c)) for c in curves], dtype=float)
        mean = np.nanmean(grid, axis=0)
        low, high = np.nanpercentile(grid, [25, 75], axis=0)
        xs = np.arange(1, length + 1)
        ax.plot(xs, mean, marker="o", label=name)
        ax.fill_between(xs, low, high, alpha=0.15)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("regret of the returned architecture")
    ax.set_title(f"{results['table']}: mean over {results['seeds']} seeds (band: quartiles)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", nargs="?", default=DEFAULT_TABLE, help="bundled name or path")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--screen", type=int, default=6, help="M candidates for the K slots")
    parser.add_argument("--proposer", default="diffnas")
    parser.add_argument("--llm", default="local")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument(
        "--setting", default=None, help="the table's proxy setting (default: first)"
    )
    parser.add_argument("--space", default=None, help="space preset or YAML (default: the table's)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--out", type=Path, default=Path("bench-screening"))
    parser.add_argument("--plot", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise UserError(f"--conditions: unknown {unknown}; allowed: {', '.join(CONDITIONS)}")
    if args.table == DEFAULT_TABLE and DEFAULT_TABLE not in bundled_tables():
        print(f"{DEFAULT_TABLE} is not bundled yet: give a table (`diffnas tabulate`'s files)")
        return {}
    table = Table.load(args.table)
    setting = proxy_setting(table, args.setting)
    args.space = args.space or space_option(table, args.out)
    budget = args.rounds * args.per_round
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in conditions}
    started = time.monotonic()
    for condition in conditions:
        for seed in range(args.seeds):
            warm_from = None
            if condition == "warm-start":
                warm_from = args.out / "sources" / f"seed-{seed + WARM_SEED_OFFSET:04d}"
                source = search_config(
                    args, args.table, setting, table, seed + WARM_SEED_OFFSET, "no-screen"
                )
                if seed == 0:
                    SearchPlan(source).validate()
                run_search(source, warm_from)
            config = search_config(args, args.table, setting, table, seed, condition, warm_from)
            if seed == 0:
                SearchPlan(config).validate()  # a table that cannot answer: refused up front
            run_dir = args.out / condition / f"seed-{seed:04d}"
            summary = run_search(config, run_dir)
            row = {"seed": seed, **measure(run_dir, summary, table, setting.name, budget)}
            rows[condition].append(row)
            print(
                f"{condition} seed {seed}: top-3 after {row['evaluations_to_top3']}, regret "
                f"{row['regret']}, tau {row['tau_table']} ({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
            )
    results = {
        "table": table.name, "setting": setting.name, "proposer": args.proposer,
        "llm": args.llm, "rounds": args.rounds, "per_round": args.per_round,
        "screen": args.screen, "seeds": args.seeds, "budget": budget,
        "optimum": table.optimum()[1], "seconds": round(time.monotonic() - started, 1),
        "conditions": {c: aggregate(r) for c, r in rows.items()}, "searches": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    if args.plot is not None:
        plot(results, rows, args.plot)
    return results


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
