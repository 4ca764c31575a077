"""Screening in the search (`--screen M --screener NAME`): obtain M candidates for K slots,
let a screener (`diffnas.propose.screen`) rank those that pass the gate, train the top K.

A request for k slots obtains ceil(k * M / K) candidates (M for a whole round; the
asynchronous schedule's smaller requests in proportion). When no more than k pass the gate
there is nothing to choose and no screener is asked. Otherwise each accepted entry gets its
`ScreenMark` (prediction, rank, selected or not) before the round file is written, so a
resumed search and a replay train exactly the selected ones and record the others as
`screened-out` trials, which cost no training.

After evaluation, `screening_summary` compares each screener's predictions with the measured
scores: Kendall's tau (scipy) per round, over the round's evaluated candidates that have a
prediction, and over all rounds together. The selected candidates are the screener's own top
choices, so these taus are measured on a range it has already narrowed; on a table benchmark
the screened-out ones can be looked up too (`benchmarks/bench_screening.py`).
"""

from __future__ import annotations

import math
from typing import Any

from diffnas.gate.entry import RoundEntry, ScreenMark
from diffnas.gate.memory import TrialRecord
from diffnas.propose.screen import Candidate, ScreenContext, Screener
from diffnas.ranks import defined, kendall_tau


def pool_size(k: int, per_round: int, screen: int) -> int:
    """Candidates a request for `k` slots obtains under `--screen` M (M for k = K)."""
    return max(k, math.ceil(k * screen / per_round))


def screen_entries(
    screener: Screener, entries: list[RoundEntry], k: int, ctx: ScreenContext
) -> tuple[list[RoundEntry], dict[str, Any]]:
    """The entries with a `ScreenMark` on each accepted one (the top `k` selected), and what
    the screener said of the request. `ctx` holds everything but the candidates and `k`."""
    accepted = [e for e in entries if e.accepted and e.arch is not None]
    info: dict[str, Any] = {"screener": screener.name, "obtained": len(entries), "slots": k}
    if len(accepted) <= k:
        info["info"] = f"{len(accepted)} accepted for {k} slot(s): nothing to screen"
        return entries, info
    ctx.candidates = [Candidate(e.arch, e.gmacs, e.params_m) for e in accepted]  # type: ignore[arg-type]
    ctx.k = k
    ranking = screener.rank(ctx)
    n = len(accepted)
    if sorted(ranking.order) != list(range(n)) or len(ranking.predicted) != n:
        raise RuntimeError(
            f"screener {screener.name!r} returned order {ranking.order} and "
            f"{len(ranking.predicted)} predictions for {n} candidates"
        )
    position = {index: pos for pos, index in enumerate(ranking.order)}
    marks = {
        id(e): ScreenMark(
            screener=screener.name,
            predicted=ranking.predicted[i],
            rank=position[i] + 1,
            selected=position[i] < k,
            note=ranking.note(i),
        )
        for i, e in enumerate(accepted)
    }
    info["info"] = ranking.info
    marked = [
        e.model_copy(update={"screen": marks[id(e)]}) if id(e) in marks else e for e in entries
    ]
    return marked, info


def screening_summary(memory: list[TrialRecord]) -> dict[str, Any] | None:
    """Per screener: candidates screened out, and the tau of its predictions against the
    measured scores per round and over all rounds; None when nothing was screened."""
    screened = [t for t in memory if t.screen]
    if not screened:
        return None
    out: dict[str, Any] = {}
    screener = {t.number: str((t.screen or {}).get("screener", "?")) for t in screened}
    for name in sorted(set(screener.values())):
        own = [t for t in screened if screener[t.number] == name]
        rounds, all_pairs = [], []
        for r in sorted({t.round for t in own}):
            in_round = [t for t in own if t.round == r]
            pairs = [
                (t.predicted, t.score) for t in in_round if t.evaluated and t.predicted is not None
            ]
            all_pairs += pairs
            rounds.append(
                {
                    "round": r,
                    "screened_out": sum(t.status == "screened-out" for t in in_round),
                    "pairs": len(pairs),
                    "tau": defined(kendall_tau([p for p, _ in pairs], [m for _, m in pairs])),  # type: ignore[misc]
                }
            )
        out[name] = {
            "screened_out": sum(t.status == "screened-out" for t in own),
            "evaluated": sum(t.evaluated for t in own),
            "pairs": len(all_pairs),
            "tau": defined(kendall_tau([p for p, _ in all_pairs], [m for _, m in all_pairs])),  # type: ignore[misc]
            "rounds": rounds,
        }
    return out


def tau_text(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def screening_lines(summary: dict[str, Any] | None) -> list[str]:
    """The screening summary in plain lines (`diffnas status`, the report)."""
    lines = []
    for name, s in (summary or {}).items():
        per_round = ", ".join(
            f"r{r['round'] + 1} {tau_text(r['tau'])} ({r['pairs']})" for r in s["rounds"]
        )
        lines.append(
            f"screener {name}: {s['screened_out']} candidate(s) screened out (never trained); "
            f"Kendall tau of predicted vs measured {tau_text(s['tau'])} over {s['pairs']} "
            f"evaluated; per round (pairs): {per_round}"
        )
    return lines
