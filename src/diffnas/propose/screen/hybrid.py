"""The `llm+gp` screener, LLINBO-style: the LLM ranks, the GP vetoes what it is sure is worse.

LLINBO (Chang et al. 2025) keeps the LLM in the loop of Bayesian optimisation but lets a
statistical surrogate justify or overrule it, trusting the LLM early, when there is no data,
and the GP more as observations accumulate. Here:

1. the LLM predicts a score per candidate (`LLMScreener.predict`) and its order is the proposal;
2. the GP (`gp.fit_posterior`, on the n measured trials) is fitted when there are enough;
3. the slots are filled in the LLM's order, but a candidate is **vetoed** when the GP gives
   probability at least q(n) that its score is worse than that of a candidate still waiting
   (P(f(x) > f(y)) from the joint posterior, correlation included); a vetoed candidate goes to
   the end, the next in the LLM's order is judged.

The trust schedule: the LLM's trust is t(n) = h / (h + n) (1 with no observation, 1/2 at
n = h, default h = 10), and the veto level is q(n) = floor + (1 - floor) t(n) (floor 0.55):
at n = 3 the GP must be 90 % sure to overrule the LLM, at n = 10 78 %, at n = 40 64 %; as n
grows the ranking tends to the GP's pairwise order. The candidate with the lowest GP mean among
those waiting can never be vetoed (q > 1/2), so the slots always fill; should vetoes leave
fewer unvetoed candidates than slots, the vetoed ones with the lowest GP mean fill them.

Predictions: the LLM's numbers (the GP's are in each candidate's note), so this screener's
Kendall tau measures the LLM it trusts. Without an LLM answer the GP ranks alone (`gp`); before
the GP can be fitted the LLM ranks alone.
"""

from __future__ import annotations

from diffnas.propose.screen.base import (
    ORDER_KEPT,
    Ranking,
    ScreenContext,
    Screener,
    order_by,
    proposer_order,
)
from diffnas.propose.screen.gp import MIN_OBSERVATIONS, GPScreener, fit_posterior
from diffnas.propose.screen.llm import LLMScreener

HALF_TRUST = 10  # observations at which the LLM's trust has halved
VETO_FLOOR = 0.55  # the veto level trust tends to (above 1/2: the slots always fill)


def llm_trust(observations: int, half: int = HALF_TRUST) -> float:
    return half / (half + observations)


def veto_level(observations: int, half: int = HALF_TRUST, floor: float = VETO_FLOOR) -> float:
    return floor + (1 - floor) * llm_trust(observations, half)


class HybridScreener(Screener):
    """The LLM's ranking, with the GP's vetoes (see the module's trust schedule)."""

    name = "llm+gp"

    def __init__(
        self,
        llm: LLMScreener,
        *,
        min_observations: int = MIN_OBSERVATIONS,
        restarts: int = 2,
        half_trust: int = HALF_TRUST,
        veto_floor: float = VETO_FLOOR,
    ) -> None:
        if not 0.5 < veto_floor < 1:
            raise ValueError(f"veto_floor={veto_floor} must lie in (0.5, 1)")
        self.llm = llm
        self.gp = GPScreener(min_observations=min_observations, restarts=restarts)
        self.half_trust = half_trust
        self.veto_floor = veto_floor

    def rank(self, ctx: ScreenContext) -> Ranking:
        values, llm_info = self.llm.predict(ctx)
        posterior = fit_posterior(ctx, self.gp.min_observations, self.gp.restarts)
        if values is None:
            if posterior is None:
                return proposer_order(
                    ctx, f"{llm_info.removesuffix(ORDER_KEPT)}; no GP yet{ORDER_KEPT}"
                )
            ranking = self.gp.rank(ctx)
            ranking.info = (
                f"{llm_info.removesuffix(ORDER_KEPT)}: the GP ranks alone ({ranking.info})"
            )
            return ranking
        notes = [f"LLM {v:.4g}" for v in values]
        if posterior is None:
            info = f"{llm_info}; no veto: the GP needs {self.gp.min_observations} measured trials"
            return Ranking(order=order_by(values), predicted=list(values), notes=notes, info=info)
        level = veto_level(posterior.observations, self.half_trust, self.veto_floor)
        std = posterior.std
        notes = [f"{note}, GP {m:.4g} +- {s:.2g}" for note, m, s in zip(notes, posterior.mean, std)]
        waiting, selected, vetoed = order_by(values), [], []
        while waiting and len(selected) < ctx.k:
            candidate = waiting.pop(0)
            rivals = [(posterior.prob_worse(candidate, other), other) for other in waiting]
            p, rival = max(rivals, default=(0.0, -1))
            if p >= level:
                vetoed.append(candidate)
                notes[candidate] += (
                    f"; vetoed by the GP: worse than candidate {rival + 1} with P = {p:.2f} "
                    f">= {level:.2f}"
                )
            else:
                selected.append(candidate)
        vetoed.sort(key=lambda i: (posterior.mean[i], i))  # the least bad fill any open slot
        trust = llm_trust(posterior.observations, self.half_trust)
        return Ranking(
            order=selected + waiting + vetoed,
            predicted=list(values),
            notes=notes,
            info=(
                f"{llm_info}; GP on {posterior.observations} measured trials, LLM trust "
                f"{trust:.2f}, veto level {level:.2f}: {len(vetoed)} vetoed"
            ),
        )
