"""`diffnas compare`: several proposers x several seeds on one task, the same budget for each.

Every (proposer, seed) is one ordinary search (`SearchRun` with the shared `SearchConfig`,
only `proposer` and `seed` changed) in its own sub-folder, so each is resumable and
`diffnas status` reads it. Afterwards, per proposer over its seeds: the best proxy score so
far against the number of evaluated candidates and against the training compute spent
(3 x 2 x MACs x steps x batch per candidate), as the mean with the min-max band over seeds;
and what each search hands back judged by the reference (`regret`: its reference score, its
regret to a table's optimum when the searches looked up a table, the spend until it found a
top-1 and a top-3 architecture, with intervals, curves and "A beats B").

Run folder (`--resume RUN_DIR` skips the searches that finished and resumes the one that
was interrupted):

    options.json                 CompareConfig: the proposers, the seeds, the shared search options
    random-seed0/ tpe-seed0/ ... one search run folder each (study.db, rounds/, trials/, ...)
    compare.json, compare.md, compare.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from diffnas.data.datasets import ImageData
from diffnas.errors import UserError
from diffnas.execute.job import EvalSpec
from diffnas.execute.table_executor import is_table, load_executor_table
from diffnas.experiments import regret
from diffnas.experiments.compute import training_flops
from diffnas.experiments.inputs import config_error, word_list
from diffnas.experiments.regret import TRAINED, value_at
from diffnas.gate.memory import TrialRecord
from diffnas.limits import MAX_SEED, MAX_SEEDS
from diffnas.markup import markdown_table, plot_text
from diffnas.propose.registry import LLM_PROPOSERS, PROPOSERS
from diffnas.runs import OPTIONS_FILE, load_options, read_file, write_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SUMMARY_FILE, SearchRun
from diffnas.search.plan import SearchPlan
from diffnas.search.summary import SearchSummary
from diffnas.space.search_space import load_space

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"


class CompareConfig(BaseModel):
    """Every option of a comparison (saved as `options.json`; `--resume` reloads it)."""

    model_config = ConfigDict(extra="forbid")

    proposers: list[str] = Field(["random", "tpe", "evolution"], min_length=1)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        [0, 1, 2], min_length=1, max_length=MAX_SEEDS
    )
    search: SearchConfig = Field(
        default_factory=lambda: SearchConfig(promote=0),
        description="the options every search shares; proposer and seed are set per run",
    )

    @field_validator("proposers")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in PROPOSERS]
        if unknown:
            raise ValueError(f"unknown proposer(s) {unknown}; allowed: {', '.join(PROPOSERS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"each proposer once, got {names}")
        return names

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"each seed once, got {seeds}")
        return seeds

    def runs(self) -> list[tuple[str, int, str]]:
        """(proposer, seed, sub-folder) of every search; seed by seed, so a stopped comparison
        has every proposer at the same number of seeds."""
        return [(p, s, f"{p}-seed{s}") for s in self.seeds for p in self.proposers]

    def search_config(self, proposer: str, seed: int) -> SearchConfig:
        return self.search.model_copy(update={"proposer": proposer, "seed": seed})


SEARCH_OPTIONS = (
    "space", "data", "data_subset", "data_image_size", "rounds", "per_round", "llm", "base_url",
    "api_key_env", "structured", "llm_max_usd", "executor", "halving_rungs", "halving_eta",
)  # fmt: skip


def build_config(options: dict[str, Any]) -> CompareConfig:
    """The config of the command line's flat options, where None means the default.

    `seeds` is a count (seeds 0 .. n-1); the proxy options build the search's proxy
    EvalSpec as `diffnas search` does; `time_budget` bounds each search's wall time.
    """
    given = {k: v for k, v in options.items() if v is not None}
    fields: dict[str, Any] = {}
    if "proposers" in given:
        fields["proposers"] = word_list(given["proposers"])
    if "seeds" in given:
        fields["seeds"] = list(range(given["seeds"]))
    search: dict[str, Any] = {k: given[k] for k in SEARCH_OPTIONS if k in given}
    if "time_budget" in given:
        search["time_budget_s"] = given["time_budget"]
    base = EvalSpec.proxy_default()
    overrides = {
        key: given[f"proxy_{key}"] for key in ("steps", "batch_size") if f"proxy_{key}" in given
    }
    score = {
        field: given[option]
        for field, option in (
            ("metric", "metric"),
            ("num_samples", "score_samples"),
            ("steps", "score_steps"),
            ("extractor", "extractor"),
            ("inception_weights", "inception_weights"),
        )
        if option in given
    }
    search["proxy"] = {
        "recipe": "proxy",
        "recipe_overrides": overrides,
        "score": {**base.score.model_dump(), **score},
        "device": given.get("device", base.device),
    }
    search["promote"] = given.get("promote", 0)
    search["final"] = final_spec(given, search["promote"], search["proxy"])
    try:  # validated as a whole, so an error names e.g. search.proxy.score.metric
        return CompareConfig(**fields, search=search)
    except ValidationError as err:
        raise config_error(err, "compare option") from None


FINAL_OPTIONS = {"final_steps": "steps", "fid_samples": "num_samples", "fid_steps": "steps"}


def final_spec(given: dict[str, Any], promote: int, proxy: dict[str, Any]) -> dict[str, Any]:
    """The final training of the promoted candidates (`--promote K`): the table's reference
    against a table (it is looked up too), else the full recipe scored by FID with the proxy's
    extractor, `--final-steps`, `--fid-samples` and `--fid-steps` as given."""
    named = [f"--{o.replace('_', '-')}" for o in FINAL_OPTIONS if o in given]
    executor = given.get("executor", "")
    if named and (promote == 0 or is_table(executor)):
        why = (
            f"the final training of a search against {executor} is the table's reference"
            if promote
            else "nothing is promoted (--promote 0, the default)"
        )
        raise UserError(f"{', '.join(named)}: {why}; drop {' and '.join(named)}.", field="final")
    if is_table(executor):
        reference = load_executor_table(executor).meta.reference.spec
        return reference.model_copy(update={"device": proxy["device"]}).model_dump(mode="json")
    base = EvalSpec.final_default()
    score = {
        **base.score.model_dump(),
        "extractor": proxy["score"]["extractor"],
        "inception_weights": proxy["score"]["inception_weights"],
        **{FINAL_OPTIONS[o]: given[o] for o in ("fid_samples", "fid_steps") if o in given},
    }
    steps = {"steps": given["final_steps"]} if "final_steps" in given else {}
    return {"recipe": base.recipe, "recipe_overrides": steps, "score": score,
            "device": proxy["device"]}  # fmt: skip


def load_config(run_dir: Path) -> CompareConfig:
    return load_options(run_dir, CompareConfig, kind="compare")


def prepare(config: CompareConfig, *, dry_run: bool = False) -> tuple[CompareConfig, ImageData]:
    """Every option checked before a run folder exists, by the plan every search runs
    (`SearchPlan.validate`; with an LLM proposer among them, as that one, so its backend is
    checked too); the data resized to the space's images unless a size was given (so e.g.
    28x28 Fashion-MNIST serves the 16x16 `tiny`)."""
    search = config.search
    space = load_space(search.space)
    if search.data_image_size is None:
        search = search.model_copy(update={"data_image_size": space.image_size})
    checked = next((p for p in config.proposers if p in LLM_PROPOSERS), config.proposers[0])
    plan = SearchPlan(search.model_copy(update={"proposer": checked}))
    images = plan.validate(dry_run=dry_run)
    return config.model_copy(update={"search": search}), images


def run_compare(config: CompareConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    """Run every search not yet finished, then write the comparison."""
    write_json(run_dir / OPTIONS_FILE, config.model_dump(mode="json"))
    for proposer, seed, name in config.runs():
        sub = run_dir / name
        if (sub / SUMMARY_FILE).exists():
            continue
        console.rule(f"{proposer}, seed {seed}")
        SearchRun(config.search_config(proposer, seed), sub, console=console).run()
    summary = summarise(config, run_dir)
    write_outputs(run_dir, summary)
    return summary


# ----- curves -----


def load_memory(run_dir: Path) -> list[TrialRecord]:
    """Every candidate of the search in `run_dir`, read from its study without writing."""
    # the study name the search chose when it started (one per run folder on a shared storage)
    options = load_options(run_dir, SearchConfig, kind="search", option="")
    study = study_mod.open_study(
        run_dir, options.storage, read_only=True, study_name=options.study_name
    )
    return study_mod.load_memory(study)


def search_curve(memory: list[TrialRecord], config: SearchConfig) -> dict[str, Any]:
    """One search's best proxy score so far after each trained candidate, with the training
    compute spent so far."""
    space = load_space(config.space)
    batch = config.proxy.train_recipe(space.objective, config.data_spec().kind).batch_size
    best: float | None = None
    flops = 0.0
    points = []
    for t in memory:
        if t.status not in TRAINED:
            continue
        steps = (t.train or {}).get("steps", 0)
        flops += training_flops((t.gmacs or 0.0) * 1e9, steps, batch)
        if t.evaluated:
            best = t.score if best is None else min(best, t.score)  # type: ignore[type-var]
        points.append({"trial": t.number, "n": len(points) + 1, "flops": flops, "best": best})
    return {
        "points": points,
        "evaluated": len(points),
        "rejected": sum(t.status == "rejected" for t in memory),
        "final_best": best,
        "training_flops": flops,
    }


def _best_at(points: list[dict[str, Any]], x: float, axis: str) -> float | None:
    """Best so far once `x` candidates (axis "n") or FLOPs (axis "flops") are spent."""
    return value_at(points, x, axis, "best")


def _band(curves: list[list[dict[str, Any]]], grid: list[float], axis: str) -> dict[str, list]:
    """Mean, min and max over seeds of the best so far at each grid point; None until every
    seed has a score (a mean over a growing set of seeds could rise, a best so far cannot)."""
    out: dict[str, list] = {"x": grid, "mean": [], "min": [], "max": []}
    for x in grid:
        values = [_best_at(c, x, axis) for c in curves]
        known = [v for v in values if v is not None]
        complete = bool(values) and len(known) == len(values)
        out["mean"].append(float(np.mean(known)) if complete else None)
        out["min"].append(min(known) if complete else None)
        out["max"].append(max(known) if complete else None)
    return out


def summarise(config: CompareConfig, run_dir: Path) -> dict[str, Any]:
    """Per proposer: its curves over the seeds and the table row; and every search judged by
    the reference (`regret`)."""
    truth = regret.table_truth(config.search.executor)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    judged: dict[str, dict[int, dict[str, Any]]] = {}
    for proposer, seed, name in config.runs():
        sub = run_dir / name
        if (sub / SUMMARY_FILE).exists():
            memory = load_memory(sub)
            curve = search_curve(memory, config.search_config(proposer, seed))
            runs.setdefault(proposer, {})[seed] = curve
            finals = read_file(
                sub / SUMMARY_FILE, SearchSummary, "search summary",
                fix=f"delete it and run `diffnas compare --resume {run_dir}` to redo that search",
            ).model_dump(mode="json")["final"]  # fmt: skip
            judged.setdefault(proposer, {})[seed] = regret.judge_search(memory, finals, truth)
    all_points = [p for by_seed in runs.values() for c in by_seed.values() for p in c["points"]]
    max_n = max((c["evaluated"] for s in runs.values() for c in s.values()), default=0)
    flops_grid = sorted({p["flops"] for p in all_points})
    proposers = {}
    for proposer, by_seed in runs.items():
        curves = [c["points"] for c in by_seed.values()]
        finals = [c["final_best"] for c in by_seed.values() if c["final_best"] is not None]
        proposers[proposer] = {
            "seeds": sorted(by_seed),
            "by_candidates": _band(curves, list(range(1, max_n + 1)), "n"),
            "by_compute": _band(curves, flops_grid, "flops"),
            "final_best": {
                "mean": float(np.mean(finals)) if finals else None,
                "min": min(finals, default=None),
                "max": max(finals, default=None),
                "per_seed": {str(s): c["final_best"] for s, c in by_seed.items()},
            },
            "evaluated_mean": float(np.mean([c["evaluated"] for c in by_seed.values()])),
            "rejected_mean": float(np.mean([c["rejected"] for c in by_seed.values()])),
            "training_tflops_mean": float(
                np.mean([c["training_flops"] for c in by_seed.values()]) / 1e12
            ),
            "judged": regret.judge_proposer(list(judged[proposer].values())),
        }
    search = config.search
    by_proposer = {p: list(by_seed.values()) for p, by_seed in judged.items()}
    beats_on, finals_by_proposer = regret.final_values(by_proposer)
    return {
        "score_label": search.proxy.score.label,
        "space": search.space,
        "data": search.data,
        "rounds": search.rounds,
        "per_round": search.per_round,
        "proposers": proposers,
        "missing": [name for p, s, name in config.runs() if s not in runs.get(p, {})],
        "judged": {
            "table": None if truth is None else truth.name,
            "reference_label": search.final.score.label if truth is None else truth.label,
            "optimum": None
            if truth is None
            else {"arch_id": truth.best_arch, "arch": truth.best_summary, "score": truth.optimum},
            "searches": {
                f"{p}-seed{s}": j for p, by_seed in judged.items() for s, j in by_seed.items()
            },
            "curves": None
            if truth is None
            else regret.regret_curves(
                {p: [j["curve"] for j in js] for p, js in by_proposer.items()}
            ),
            "beats_on": beats_on,
            "beats": regret.beats(finals_by_proposer),
        },
    }


# ----- outputs -----

TABLE_HEADER = [
    "proposer",
    "seeds",
    "evaluated",
    "rejected",
    "training TFLOPs",
    "best score: mean",
    "min - max over seeds",
]


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per proposer (means over its seeds); the lowest mean best score is starred."""
    means = {p: r["final_best"]["mean"] for p, r in summary["proposers"].items()}
    winner = min((p for p in means if means[p] is not None), key=means.get, default=None)  # type: ignore[arg-type]
    rows = []
    for proposer, r in summary["proposers"].items():
        best = r["final_best"]
        mean = (
            "-"
            if best["mean"] is None
            else f"{best['mean']:.4g}" + (" *" if proposer == winner else "")
        )
        spread = "-" if best["min"] is None else f"{best['min']:.4g} - {best['max']:.4g}"
        rows.append(
            [proposer, str(len(r["seeds"])), f"{r['evaluated_mean']:.1f}",
             f"{r['rejected_mean']:.1f}", f"{r['training_tflops_mean']:.3g}", mean, spread]
        )  # fmt: skip
    return rows


def write_outputs(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / COMPARE_JSON, summary)
    label = summary["score_label"]
    lines = [
        f"# Proposers compared: {summary['space']} on {summary['data']}, "
        f"{summary['rounds']} rounds x {summary['per_round']}, ranked by {label}",
        "",
        *markdown_table(TABLE_HEADER, table_rows(summary)),
        "",
        f"Means over seeds; `*` the lowest mean best {label}. Evaluated: candidates trained; "
        "rejected: proposals the gate refused (no training). Training compute: "
        "3 x 2 x MACs x steps x batch per candidate.",
    ]
    if summary["missing"]:
        lines.append(f"Not finished: {', '.join(summary['missing'])}.")
    lines += regret.judged_markdown(summary)
    (run_dir / COMPARE_MD).write_text("\n".join(lines) + "\n")
    plot(summary, run_dir / COMPARE_PNG)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Best so far against candidates and against training compute: mean line, min-max band;
    with a table, below them the regret of the best so far (`regret.plot_regret`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = summary["judged"]["curves"]
    fig, axes = plt.subplots(2 if curves else 1, 2, figsize=(11, 8 if curves else 4), squeeze=False)
    by_n, by_flops = axes[0]
    for proposer, r in summary["proposers"].items():
        for ax, band, scale in (
            (by_n, r["by_candidates"], 1.0),
            (by_flops, r["by_compute"], 1e12),
        ):
            have = [i for i, m in enumerate(band["mean"]) if m is not None]
            if not have:
                continue
            x = [band["x"][i] / scale for i in have]
            mean = [band["mean"][i] for i in have]
            (line,) = ax.plot(x, mean, drawstyle="steps-post", marker=".", label=proposer)
            ax.fill_between(
                x, [band["min"][i] for i in have], [band["max"][i] for i in have],
                step="post", alpha=0.2, color=line.get_color(),
            )  # fmt: skip
    label = summary["score_label"]
    by_n.set_xlabel("evaluated candidates")
    by_n.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_flops.set_xlabel("training compute (TFLOPs)")
    for ax in (by_n, by_flops):
        ax.set_ylabel(plot_text(f"best {label} so far"))
        ax.grid(alpha=0.3)
    by_n.legend(title="mean, min-max over seeds", fontsize=8)
    if curves:
        regret.plot_regret(*axes[1], curves)
    fig.suptitle(plot_text(f"{Path(summary['space']).stem} on {summary['data']}"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
