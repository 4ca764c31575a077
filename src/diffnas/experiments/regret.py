"""What each search of a comparison hands back, judged by the reference, and the proposers
compared on that over their seeds.

Inside a search the proxy ranks the candidates; where the proxy ranks poorly, the best proxy
score a search saw measures luck. What a user gets is the architecture the search hands back
(its best by proxy score) and how good that one is by the reference, the long training the
proxy stands in for:

- With a table (the searches ran with `--executor table:...`): the mean of that architecture's
  reference scores over the table's seeds; its *regret*, that minus the best mean reference
  score of any architecture of the table (lower is better, so 0 means the search handed back
  the optimum); its rank in the table; and the evaluations and device-seconds the search spent
  until it first evaluated a top-1 and a top-3 architecture of the table (by mean reference
  score; "evaluated" means scored at the full proxy fidelity, so a candidate successive
  halving pruned early does not count as found).
- Without a table: the score of the search's own final training of that architecture
  (`--promote`), if it has one; else no reference score, and the note says why. No optimum is
  known, so there is no regret.

Per proposer over its seeds: means with percentile bootstrap intervals (scipy); the regret of
the best-so-far architecture (by proxy) against evaluations and against device-seconds, its
mean and interval at each point; and the probability that one proposer's search ends with a
lower regret than another's (over every pair of their seeds, ties counting half: the
Mann-Whitney U over the product of the sample sizes).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from diffnas.execute.table import Table
from diffnas.execute.table_executor import is_table, load_executor_table
from diffnas.gate.memory import TrialRecord
from diffnas.markup import markdown_table

TRAINED = ("complete", "pruned", "diverged", "oom", "failed")  # candidates that cost training
TOP = (1, 3)  # "found a top-k architecture" for these k
CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so a comparison's intervals reproduce
MAX_GRID = 200  # points of a curve against device-seconds (a finer one only costs bootstrap time)


# ----- the table's answer key -----


class Truth:
    """What a table says of every architecture: its mean reference score and its rank."""

    def __init__(self, table: Table) -> None:
        self.name = table.name
        self.label = table.meta.reference.label
        self.best_arch, self.optimum = table.optimum()
        self.best_summary = table.arch(self.best_arch).summary()
        self.means = table.mean_scores()
        self.ranks = {arch_id: table.rank(arch_id) for arch_id in self.means}

    def regret(self, arch_id: str) -> float | None:
        mean = self.means.get(arch_id)
        return None if mean is None else mean - self.optimum

    def in_top(self, arch_id: str, k: int) -> bool:
        rank = self.ranks.get(arch_id)
        return rank is not None and rank <= k


def table_truth(executor: str) -> Truth | None:
    """The answer key of the table a comparison's searches looked up, None without one."""
    return Truth(load_executor_table(executor)) if is_table(executor) else None


# ----- one search -----


def judge_search(
    memory: Sequence[TrialRecord], finals: Sequence[dict[str, Any]], truth: Truth | None
) -> dict[str, Any]:
    """One search judged (see the module docstring); `finals` are its summary's promoted
    candidates, read only without a table. `curve` has one point per trained candidate: the
    evaluations and device-seconds spent so far and the regret of the best so far by proxy."""
    best: TrialRecord | None = None
    spent = 0.0
    curve: list[dict[str, Any]] = []
    found: dict[int, dict[str, Any]] = {k: {"evaluations": None, "device_s": None} for k in TOP}
    trained = [t for t in memory if t.status in TRAINED]
    for n, t in enumerate(trained, start=1):
        spent += float(t.device_s or 0.0)
        if t.evaluated and (best is None or t.score < best.score):  # type: ignore[operator]
            best = t  # strictly lower: a tie keeps the earlier trial, as the search's summary
        if truth is not None and t.evaluated and t.arch is not None:
            for k in TOP:
                if found[k]["evaluations"] is None and truth.in_top(t.arch.arch_hash(), k):
                    found[k] = {"evaluations": n, "device_s": spent}
        regret = None
        if truth is not None and best is not None and best.arch is not None:
            regret = truth.regret(best.arch.arch_hash())
        curve.append({"evaluations": n, "device_s": spent, "regret": regret})
    arch_id = best.arch.arch_hash() if best is not None and best.arch is not None else None
    reference, source, note = _reference(best, arch_id, finals, truth)
    return {
        "trial": None if best is None else best.number,
        "arch_id": arch_id,
        "arch": None if best is None or best.arch is None else best.arch.summary(),
        "proxy_best": None if best is None else best.score,
        "reference": reference,
        "reference_from": source,
        "note": note,
        "regret": None if truth is None or arch_id is None else truth.regret(arch_id),
        "rank": None if truth is None or arch_id is None else truth.ranks.get(arch_id),
        "evaluations": len(trained),
        "device_s": spent,
        **{f"top{k}": found[k] for k in TOP},
        "curve": curve,
    }


def _reference(
    best: TrialRecord | None,
    arch_id: str | None,
    finals: Sequence[dict[str, Any]],
    truth: Truth | None,
) -> tuple[float | None, str | None, str | None]:
    """(reference score, where it came from, why there is none)."""
    if best is None or arch_id is None:
        return None, None, "no candidate was evaluated"
    if truth is not None:
        mean = truth.means.get(arch_id)
        if mean is None:
            return None, None, f"table {truth.name!r} has no finished reference row for it"
        return mean, "table", None
    final = next((f for f in finals if f.get("trial") == best.number), None)
    if final is None:
        return None, None, "no table and no final training (run against a table, or --promote)"
    if final.get("status") != "complete" or final.get("score") is None:
        return None, None, f"its final training ended {final.get('status')}"
    return float(final["score"]), "final", None


# ----- over seeds -----


def mean_interval(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean of the known values with the percentile bootstrap interval of the mean (scipy,
    `RESAMPLES` resamples, seeded); no interval from fewer than two values."""
    known = np.array([v for v in values if v is not None], dtype=float)
    out: dict[str, Any] = {"mean": None, "low": None, "high": None, "n": len(known)}
    if len(known) == 0:
        return out
    out["mean"] = float(known.mean())
    if len(known) >= 2:
        low, high = _bootstrap_means(known[:, None])
        out["low"], out["high"] = float(low[0]), float(high[0])
    return out


def _bootstrap_means(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each column of `values` (rows: seeds).
    Percentile, not BCa: BCa has no interval where every seed agrees (regret 0 everywhere)."""
    result = stats.bootstrap(
        (values,), np.mean, axis=0, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
        method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED), batch=100,
    )  # fmt: skip
    return np.atleast_1d(result.confidence_interval.low), np.atleast_1d(
        result.confidence_interval.high
    )


def judge_proposer(searches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A proposer's judged searches (one per seed) summarised: means with intervals; for the
    top-k, in how many seeds it was found and the spend until then, over those seeds."""
    out: dict[str, Any] = {
        key: mean_interval(s[key] for s in searches)
        for key in ("proxy_best", "reference", "regret")
    }
    for k in TOP:
        hits = [s[f"top{k}"] for s in searches if s[f"top{k}"]["evaluations"] is not None]
        out[f"top{k}"] = {
            "found": len(hits),
            "of": len(searches),
            "evaluations": mean_interval(h["evaluations"] for h in hits),
            "device_s": mean_interval(h["device_s"] for h in hits),
        }
    return out


def value_at(points: Sequence[dict[str, Any]], x: float, axis: str, value: str) -> Any:
    """`value` of the last point with `axis` <= x: what a search had once it spent x; a search
    that stopped before keeps its last value (it found that much with no more); None before
    its first point."""
    found = None
    for p in points:
        if p[axis] > x:
            break
        found = p[value]
    return found


def regret_band(curves: Sequence[Sequence[dict[str, Any]]], grid: Sequence[float], axis: str):
    """Mean regret over seeds at each grid point with its bootstrap interval; None until every
    seed has one (a mean over a growing set of seeds could rise, a best so far cannot)."""
    out: dict[str, list] = {"x": list(grid), "mean": [], "low": [], "high": []}
    values = [[value_at(c, x, axis, "regret") for c in curves] for x in grid]
    complete = [i for i, row in enumerate(values) if row and None not in row]
    low = high = np.full(len(complete), np.nan)
    if len(curves) >= 2 and complete:
        low, high = _bootstrap_means(np.array([values[i] for i in complete], dtype=float).T)
    intervals = {i: (low[j], high[j]) for j, i in enumerate(complete)}
    for i, row in enumerate(values):
        known = i in intervals
        out["mean"].append(float(np.mean(row)) if known else None)
        out["low"].append(float(intervals[i][0]) if known and len(curves) >= 2 else None)
        out["high"].append(float(intervals[i][1]) if known and len(curves) >= 2 else None)
    return out


def regret_curves(by_proposer: dict[str, list[list[dict[str, Any]]]]) -> dict[str, Any]:
    """Every proposer's regret band against evaluations and against device-seconds, on grids
    shared by all proposers (device-seconds: every point any search reached, or `MAX_GRID`
    evenly spaced ones where there are more)."""
    points = [p for curves in by_proposer.values() for c in curves for p in c]
    most = max((p["evaluations"] for p in points), default=0)
    seconds = sorted({p["device_s"] for p in points})
    if len(seconds) > MAX_GRID:
        seconds = np.linspace(seconds[0], seconds[-1], MAX_GRID).tolist()
    return {
        proposer: {
            "by_evaluations": regret_band(curves, list(range(1, most + 1)), "evaluations"),
            "by_device_s": regret_band(curves, seconds, "device_s"),
        }
        for proposer, curves in by_proposer.items()
    }


def beats(finals: dict[str, Sequence[float | None]]) -> dict[str, dict[str, float | None]]:
    """P(A beats B) for every ordered pair of proposers: the share of (seed of A, seed of B)
    pairs where A's value is lower, ties counting half (scipy's Mann-Whitney U of B against A,
    over n_A x n_B). None where either has no value."""
    known = {p: [v for v in values if v is not None] for p, values in finals.items()}
    out: dict[str, dict[str, float | None]] = {}
    for a, mine in known.items():
        out[a] = {}
        for b, theirs in known.items():
            if a == b:
                continue
            if not mine or not theirs:
                out[a][b] = None
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all ties: the p-value is nan, U is not
                u = stats.mannwhitneyu(theirs, mine).statistic
            out[a][b] = float(u) / (len(mine) * len(theirs))
    return out


def final_values(searches: dict[str, Sequence[dict[str, Any]]]) -> tuple[str | None, dict]:
    """What "A beats B" compares: each search's regret with a table, else its reference score
    (the same order: they differ by the table's optimum), else nothing."""
    for key in ("regret", "reference"):
        values = {p: [s[key] for s in judged] for p, judged in searches.items()}
        if any(v is not None for vs in values.values() for v in vs):
            return key, values
    return None, {}


# ----- outputs: the tables of compare.md and the terminal -----

JUDGED_HEADER = [
    "proposer", "seeds", "proxy best", "reference", "regret", "top-1 found",
    "evaluations to top-1", "device-s to top-1", "top-3 found", "evaluations to top-3",
    "device-s to top-3",
]  # fmt: skip
SEARCH_HEADER = [
    "search", "trial", "architecture", "proxy", "reference", "regret", "rank", "evaluations",
    "device-s", "evaluations to top-1", "evaluations to top-3",
]  # fmt: skip


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def estimate(stat: dict[str, Any]) -> str:
    """'mean [low, high]' of `mean_interval`; the mean alone from one value; '-' from none."""
    if stat["mean"] is None:
        return "-"
    if stat["low"] is None:
        return number(stat["mean"])
    return f"{number(stat['mean'])} [{number(stat['low'])}, {number(stat['high'])}]"


def judged_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per proposer: its searches' means over seeds with their intervals."""
    rows = []
    for proposer, r in summary["proposers"].items():
        j = r["judged"]
        row = [proposer, str(len(r["seeds"]))]
        row += [estimate(j[key]) for key in ("proxy_best", "reference", "regret")]
        for k in TOP:
            top = j[f"top{k}"]
            row += [f"{top['found']}/{top['of']}", estimate(top["evaluations"])]
            row += [estimate(top["device_s"])]
        rows.append(row)
    return rows


def search_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per search: what it handed back and what that is worth."""
    rows = []
    for name, s in summary["judged"]["searches"].items():
        reference = number(s["reference"]) if s["reference"] is not None else f"- ({s['note']})"
        rows.append(
            [name, "-" if s["trial"] is None else str(s["trial"]), s["arch"] or "-",
             number(s["proxy_best"]), reference, number(s["regret"]),
             "-" if s["rank"] is None else str(s["rank"]), str(s["evaluations"]),
             number(s["device_s"]), *(str(s[f"top{k}"]["evaluations"] or "-") for k in TOP)]
        )  # fmt: skip
    return rows


def beats_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The "row beats column" matrix: header and rows."""
    table = summary["judged"]["beats"]
    names = list(table)
    rows = [[a, *("" if a == b else number(table[a][b], 2) for b in names)] for a in names]
    return ["P(row beats column)", *names], rows


def judged_markdown(summary: dict[str, Any]) -> list[str]:
    """The lines of compare.md's section on what the searches hand back."""
    judged = summary["judged"]
    label = judged["reference_label"]
    if judged["table"] is not None:
        optimum = judged["optimum"]
        where = (
            f"table {judged['table']!r} (mean over its reference seeds; optimum "
            f"{number(optimum['score'])}, {optimum['arch']}, id {optimum['arch_id']})"
        )
    else:
        where = "each search's final training of it (no table: no optimum, no regret)"
    lines = [
        "",
        f"## What each search hands back, by {label}",
        "",
        f"The architecture a search hands back is its best by {summary['score_label']} (the "
        f"proxy best); its reference score is its {label} from {where}. Regret: reference "
        "score minus the optimum's (0: the search handed back the best architecture). Top-k "
        "found: in how many seeds the search scored one of the table's k best architectures "
        "(by mean reference score), and the evaluations (trained candidates) and device-"
        "seconds it had spent by then, over those seeds. Means over seeds with 95 % "
        f"percentile bootstrap intervals ({RESAMPLES} resamples).",
        "",
        *markdown_table(JUDGED_HEADER, judged_rows(summary)),
        "",
        *markdown_table(SEARCH_HEADER, search_rows(summary)),
    ]
    if judged["beats_on"] is not None:
        header, rows = beats_rows(summary)
        lines += [
            "",
            f"P(row beats column): the share of pairs (a seed of the row's proposer, a seed of "
            f"the column's) whose final {judged['beats_on']} is lower for the row, ties half.",
            "",
            *markdown_table(header, rows),
        ]
    return lines


def plot_regret(by_n: Any, by_seconds: Any, curves: dict[str, Any]) -> None:
    """Regret of the best so far (by proxy) against evaluations and against device-seconds:
    the mean over seeds, its bootstrap interval as a band."""
    from matplotlib.ticker import MaxNLocator

    for proposer, c in curves.items():
        for ax, band in ((by_n, c["by_evaluations"]), (by_seconds, c["by_device_s"])):
            have = [i for i, m in enumerate(band["mean"]) if m is not None]
            if not have:
                continue
            x = [band["x"][i] for i in have]
            (line,) = ax.plot(
                x, [band["mean"][i] for i in have], drawstyle="steps-post", marker=".",
                label=proposer,
            )  # fmt: skip
            if all(band["low"][i] is not None for i in have):
                ax.fill_between(
                    x, [band["low"][i] for i in have], [band["high"][i] for i in have],
                    step="post", alpha=0.2, color=line.get_color(),
                )  # fmt: skip
    by_n.set_xlabel("evaluated candidates")
    by_n.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_seconds.set_xlabel("device-seconds")
    for ax in (by_n, by_seconds):
        ax.set_ylabel("regret of the best so far by proxy")
        ax.grid(alpha=0.3)
    by_n.legend(title="mean, 95 % bootstrap interval", fontsize=8)
