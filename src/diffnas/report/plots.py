"""The report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so no global
state or interactive backend is touched: a report can be written from any process.
Every score axis is "lower is better" and names the score's protocol label.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
from matplotlib.figure import Figure
from optuna._hypervolume import compute_hypervolume

from diffnas.markup import plot_text
from diffnas.ranks import defined, kendall_tau
from diffnas.report.source import SearchRecord, TrialRow

# Colour-blind-safe (Okabe-Ito), one per run folder
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DPI = 100


@dataclass
class RankAgreement:
    """How well one score ranks like another: Kendall's τ over the pairs that have both."""

    png: bytes
    tau: float | None  # None with fewer than 2 pairs, or when a side has no spread
    n: int


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def run_label(record: SearchRecord, records: Sequence[SearchRecord]) -> str:
    """A run's legend entry: its proposer, plus the folder when several runs share one."""
    same = sum(r.proposer == record.proposer for r in records)
    return record.proposer if same == 1 else f"{record.proposer} ({record.name})"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, score) points no other point beats on both (lower is better), by cost."""
    front: list[tuple[float, float]] = []
    for cost, score in sorted(points):
        if not front or score < front[-1][1]:
            front.append((cost, score))
    return front


def _evaluated(record: SearchRecord) -> list[TrialRow]:
    return [t for t in record.trials if t.proxy is not None]


def score_vs_macs(records: Sequence[SearchRecord]) -> bytes:
    """Proxy score against GMACs per candidate, the Pareto front of all of them and the
    space's budget band (from the first run whose space is known)."""
    fig = Figure(figsize=(6.2, 4.2))
    ax = fig.add_subplot()
    space = next((r.space for r in records if r.space is not None), None)
    if space is not None:
        budget = space.budget
        ax.axvspan(budget.min_gmacs, budget.max_gmacs, color="#009E73", alpha=0.08, lw=0)
        for bound in (budget.min_gmacs, budget.max_gmacs):
            ax.axvline(bound, color="#009E73", ls="--", lw=1)
        ax.plot([], [], color="#009E73", ls="--", lw=1, label="budget band")
    points = []
    for i, record in enumerate(records):
        rows = [t for t in _evaluated(record) if t.gmacs is not None]
        xs, ys = [t.gmacs for t in rows], [t.proxy.value for t in rows]  # type: ignore[union-attr]
        points += list(zip(xs, ys))
        ax.scatter(
            xs,
            ys,
            s=28,
            color=COLOURS[i % len(COLOURS)],
            label=plot_text(run_label(record, records)),
        )
        for t, x, y in zip(rows, xs, ys):
            ax.annotate(
                str(t.number), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7
            )
    front = pareto_front(points)
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="black", lw=1, alpha=0.7, label="Pareto front")
    ax.set_xlabel("GMACs per image (one forward pass)")
    ax.set_ylabel(f"{plot_text(records[0].proxy_label)} (lower is better)")
    ax.set_title("Proxy score against compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def score_vs_latency(records: Sequence[SearchRecord]) -> bytes:
    """Proxy score against the measured latency of one forward pass, the Pareto front of all
    candidates and the latency budget (the first run's that has one)."""
    fig = Figure(figsize=(6.2, 4.2))
    ax = fig.add_subplot()
    bound = next((r.config.latency_budget_ms for r in records if r.config.latency_budget_ms), None)
    if bound is not None:
        ax.axvline(bound, color="#D55E00", ls="--", lw=1, label=f"budget {bound:g} ms")
    points = []
    for i, record in enumerate(records):
        rows = [t for t in _evaluated(record) if t.latency_ms is not None]
        xs, ys = [t.latency_ms for t in rows], [t.proxy.value for t in rows]  # type: ignore[union-attr]
        points += list(zip(xs, ys))
        ax.scatter(xs, ys, s=28, color=COLOURS[i % len(COLOURS)], label=run_label(record, records))
        for t, x, y in zip(rows, xs, ys):
            ax.annotate(
                str(t.number), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7
            )
    front = pareto_front(points)  # type: ignore[arg-type]
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="black", lw=1, alpha=0.7, label="Pareto front")
    ax.set_xlabel("measured latency, ms per forward pass")
    ax.set_ylabel(f"{records[0].proxy_label} (lower is better)")
    ax.set_title("Proxy score against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area (score, cost) points dominate up to `reference` (both lower is better), by
    Optuna's own hypervolume (`optuna._hypervolume`, what its hypervolume history plot uses).
    Points beyond the reference on either axis add nothing."""
    inside = [p for p in points if p[0] <= reference[0] and p[1] <= reference[1]]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.asarray(inside, dtype=float), np.asarray(reference)))


def hypervolume_reference(
    records: Sequence[SearchRecord], objective: str
) -> tuple[float, float] | None:
    """One reference point for every run compared: 10 % beyond the worst score and cost any of
    them reached, so each run's hypervolume is measured in the same box."""
    points = [
        (t.proxy.value, float(t.cost(objective)))  # type: ignore[union-attr, arg-type]
        for r in records
        for t in _evaluated(r)
        if t.cost(objective) is not None
    ]
    if not points:
        return None
    scores, costs = zip(*points)
    return max(scores) * 1.1 + 1e-12, max(costs) * 1.1 + 1e-12


def hypervolume_by_round(
    records: Sequence[SearchRecord], objective: str
) -> tuple[list[list[float]], tuple[float, float]] | None:
    """Per run, the hypervolume of its candidates evaluated by each round (score and
    `objective`'s cost, one shared reference point); None when no candidate has both."""
    reference = hypervolume_reference(records, objective)
    if reference is None:
        return None
    curves = []
    for record in records:
        rows = [t for t in _evaluated(record) if t.cost(objective) is not None]
        last = max((t.round for t in record.trials), default=-1)
        curves.append(
            [
                hypervolume(
                    [(t.proxy.value, float(t.cost(objective))) for t in rows if t.round <= r],  # type: ignore[union-attr, arg-type]
                    reference,
                )
                for r in range(last + 1)
            ]
        )
    return curves, reference


def hypervolume_curves(records: Sequence[SearchRecord], objective: str) -> bytes | None:
    """Hypervolume against round, one line per run (its proposer): how fast each search grew
    its Pareto front of score and cost. None when no candidate has both."""
    found = hypervolume_by_round(records, objective)
    if found is None:
        return None
    curves, reference = found
    fig = Figure(figsize=(6.2, 4.2))
    ax = fig.add_subplot()
    for i, (record, curve) in enumerate(zip(records, curves)):
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            marker="o",
            color=COLOURS[i % len(COLOURS)],
            label=run_label(record, records),
        )
    unit = "ms" if objective == "latency" else "GMACs"
    ax.set_xlabel("round")
    ax.set_ylabel(f"hypervolume ({records[0].proxy_label} x {unit})")
    ax.set_title(f"Hypervolume, reference ({reference[0]:.3g}, {reference[1]:.3g} {unit})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def best_so_far(rows: Sequence[TrialRow]) -> list[float | None]:
    """The best (lowest) proxy score among `rows[:i + 1]` for each i; None before the first."""
    best: float | None = None
    out = []
    for t in rows:
        if t.proxy is not None and (best is None or t.proxy.value < best):
            best = t.proxy.value
        out.append(best)
    return out


def best_so_far_curves(records: Sequence[SearchRecord]) -> bytes:
    """Best proxy score so far against the round and against device-seconds, one line per run
    (several run folders compare proposers side by side)."""
    fig = Figure(figsize=(10, 4))
    by_round, by_compute = fig.subplots(1, 2)
    for i, record in enumerate(records):
        colour, label = COLOURS[i % len(COLOURS)], plot_text(run_label(record, records))
        rows = sorted(record.trials, key=lambda t: t.number)
        best = best_so_far(rows)
        rounds = sorted({t.round for t in rows})
        last_of_round = {t.round: b for t, b in zip(rows, best)}
        xs = [r + 1 for r in rounds if last_of_round[r] is not None]
        ys = [last_of_round[r] for r in rounds if last_of_round[r] is not None]
        by_round.plot(xs, ys, marker="o", color=colour, label=label)
        compute = list(accumulate(t.device_s or 0.0 for t in rows))
        pairs = [(c, b) for c, b in zip(compute, best) if b is not None]
        if pairs:
            cx, cy = zip(*pairs)
            by_compute.step(cx, cy, where="post", marker=".", color=colour, label=label)
    by_round.set_xlabel("round")
    by_compute.set_xlabel("proxy evaluation device-seconds (cumulative)")
    for ax in (by_round, by_compute):
        ax.set_ylabel(f"best {plot_text(records[0].proxy_label)} so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    by_round.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("How the search improved")
    return _png(fig)


def rank_agreement(
    pairs: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str, title: str
) -> RankAgreement:
    """Scatter of (x, y, point label) with Kendall's τ between x and y in the title."""
    tau = defined(kendall_tau([p[0] for p in pairs], [p[1] for p in pairs]))
    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=30, color=COLOURS[0])
    for x, y, label in pairs:
        ax.annotate(plot_text(label), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    tau_text = f"Kendall τ = {tau:.2f}" if tau is not None else "Kendall τ undefined"
    ax.set_title(f"{plot_text(title)}\n{tau_text} (n = {len(pairs)})")
    ax.set_xlabel(plot_text(xlabel))
    ax.set_ylabel(plot_text(ylabel))
    ax.grid(alpha=0.3)
    return RankAgreement(png=_png(fig), tau=tau, n=len(pairs))


def proxy_vs_final(records: Sequence[SearchRecord]) -> RankAgreement | None:
    """Proxy score against final score for every promoted trial; None when fewer than two
    have both (one point ranks nothing: the plot would only show an undefined τ)."""
    pairs = [
        (
            t.proxy.value,
            t.final.value,
            f"{run_label(r, records)}:{t.number}" if len(records) > 1 else str(t.number),
        )
        for r in records
        for t in r.trials
        if t.proxy is not None and t.final is not None
    ]
    if len(pairs) < 2:
        return None
    return rank_agreement(
        pairs,
        f"proxy {records[0].proxy_label}",
        f"final {records[0].final_label}",
        "Does the proxy rank like the final score?",
    )
