"""The baselines DiffNAS is compared with: random search, TPE, NSGA-II and regularised evolution.

All of them draw architectures and ask `ctx.check` before proposing, redrawing (a bounded number
of times) what is over budget, outside the space or a duplicate - the same gate the LLM's
repair turns answer to, so every method spends its training only on acceptable candidates.
Every draw uses `ctx.rng` (TPE, NSGA-II: a sampler seeded from it), so a round is reproducible.
TPE and NSGA-II are Optuna's samplers on a study rebuilt from the memory each round; with two
objectives (`ctx.objectives`) the study is multi-objective (score and latency or GMACs).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from diffnas.errors import UserError
from diffnas.gate.check import Verdict
from diffnas.gate.memory import UNTRAINED, TrialRecord
from diffnas.propose.base import Proposal, ProposalContext, Proposer
from diffnas.space.arch import ArchConfig
from diffnas.space.params import decode, distributions, encode
from diffnas.space.search_space import Budget

Draw = Callable[[], tuple[Any, str]]  # () -> (raw proposal, rationale)
Feedback = Callable[[Any, Verdict], None]


def draw_until_ok(
    ctx: ProposalContext,
    accepted: list[ArchConfig],
    draw: Draw,
    max_tries: int,
    name: str,
    feedback: Feedback | None = None,
) -> Proposal:
    """Draw until the check accepts; after `max_tries` the last draw comes back with its reason."""
    raw: Any = None
    rationale = ""
    verdict = Verdict(arch=None, cost=None, reason="no draw was made")
    for attempt in range(1, max_tries + 1):
        raw, rationale = draw()
        verdict = ctx.check(raw, accepted)
        if feedback is not None:
            feedback(raw, verdict)
        if verdict.ok:
            return Proposal(raw, rationale, verdict, name, meta={"draws": attempt})
    reason = f"no acceptable candidate in {max_tries} draws; the last one: {verdict.reason}"
    return Proposal(
        raw, rationale, Verdict(verdict.arch, verdict.cost, reason), name, {"draws": max_tries}
    )


def fill_round(
    ctx: ProposalContext,
    draw_for_slot: Callable[[list[ArchConfig]], Draw],
    max_tries: int,
    name: str,
    feedback: Feedback | None = None,
) -> list[Proposal]:
    """Up to `ctx.k` accepted proposals; stops at the first slot that cannot be filled.

    `draw_for_slot(accepted so far)` gives the slot's draw function (evolution switches from
    random samples to mutations once the population is full).
    """
    proposals: list[Proposal] = []
    accepted: list[ArchConfig] = []
    for _ in range(ctx.k):
        proposal = draw_until_ok(ctx, accepted, draw_for_slot(accepted), max_tries, name, feedback)
        proposals.append(proposal)
        if proposal.verdict is None or not proposal.verdict.ok:
            break  # the space is (nearly) exhausted: more draws would fail the same way
        assert proposal.verdict.arch is not None
        accepted.append(proposal.verdict.arch)
    return proposals


class RandomProposer(Proposer):
    """Uniform samples from the space, redrawn until in budget and new."""

    name = "random"

    def __init__(self, *, max_tries: int = 200) -> None:
        self.max_tries = max_tries  # draws per slot before giving up

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        def draw() -> tuple[Any, str]:
            return ctx.space.proposal_of(ctx.space.sample(ctx.rng)), "uniform random sample"

        return fill_round(ctx, lambda _: draw, self.max_tries, self.name)


def budget_population(ctx: ProposalContext, given: int | None, cap: int) -> int:
    """A population that fits the search: `given`, or half its evaluations between 2 and `cap`.

    A population as large as the budget leaves no evaluation for the offspring: the search
    would be a random one under the name of evolution."""
    if given is not None:
        return given
    evaluations = ctx.evaluations or ctx.num_rounds * ctx.k
    return min(cap, max(2, evaluations // 2))


class EvolutionProposer(Proposer):
    """Regularised evolution (Real et al. 2019): tournament on the latest P, mutate the winner.

    The population is the last P evaluated candidates (so the oldest die first, the "aging" of
    regularised evolution). Until it has that many members, counting those still being
    evaluated and this round's, the slots are filled with random samples. P is
    `population_size`, or left unset half the search's evaluations, between 2 and 16.
    """

    name = "evolution"
    max_population = 16  # P when the budget is large (Real et al. use 100 over 20,000 models)

    def __init__(
        self,
        *,
        population_size: int | None = None,
        tournament_size: int = 4,
        max_tries: int = 200,
    ) -> None:
        if population_size is not None and not 1 <= tournament_size <= population_size:
            raise UserError(
                f"tournament_size={tournament_size} must be between 1 and population_size={population_size}",
                field="tournament_size",
            )
        if tournament_size < 1:
            raise UserError(
                f"tournament_size={tournament_size} must be at least 1", field="tournament_size"
            )
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.max_tries = max_tries

    def population_for(self, ctx: ProposalContext) -> int:
        """P for this search: `population_size` if given, else from the evaluation budget."""
        return budget_population(ctx, self.population_size, self.max_population)

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        size = self.population_for(ctx)
        scored = sorted((t for t in ctx.memory if t.evaluated), key=lambda t: t.number)
        population = scored[-size:]
        in_flight = sum(t.status in ("pending", "running") for t in ctx.memory)

        def draw_for_slot(accepted: list[ArchConfig]) -> Draw:
            filling = len(population) + in_flight + len(accepted) < size
            return self._random(ctx) if filling or not population else self._mutant(ctx, population)

        return fill_round(ctx, draw_for_slot, self.max_tries, self.name)

    def _random(self, ctx: ProposalContext) -> Draw:
        def draw() -> tuple[Any, str]:
            arch = ctx.space.sample(ctx.rng)
            return ctx.space.proposal_of(arch), "random sample (filling the population)"

        return draw

    def _mutant(self, ctx: ProposalContext, population: list[TrialRecord]) -> Draw:
        def draw() -> tuple[Any, str]:
            contenders = ctx.rng.sample(population, min(self.tournament_size, len(population)))
            parent = min(contenders, key=lambda t: (t.score, t.number))
            assert parent.arch is not None
            try:
                child = ctx.space.mutate(parent.arch, ctx.rng)
            except UserError:  # a parent from another space may have no valid mutation here
                return self._random(ctx)()
            note = f"mutation of trial {parent.number} ({parent.score_name} {parent.score:.4g})"
            return ctx.space.proposal_of(child), note

        return draw


# --- Optuna's samplers: TPE and NSGA-II -------------------------------------------------


def budget_violation(
    gmacs: float,
    params_m: float | None,
    budget: Budget,
    latency_ms: float | None = None,
    latency_budget_ms: float | None = None,
) -> float:
    """How far outside the budget, as a fraction of the bound (<= 0: inside). With a latency
    budget the measured latency is bounded instead of the GMACs band."""
    if latency_budget_ms is not None:
        excess = [latency_ms / latency_budget_ms - 1] if latency_ms is not None else []
    else:
        excess = [gmacs / budget.max_gmacs - 1]
        if budget.min_gmacs > 0:
            excess.append(1 - gmacs / budget.min_gmacs)
    if budget.max_params_m is not None and params_m is not None:
        excess.append(params_m / budget.max_params_m - 1)
    return max(excess, default=1.0)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Keep the throwaway study's INFO lines and experimental-feature warnings off the console."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _violation(
    ctx: ProposalContext, gmacs: float, params_m: float | None, ms: float | None
) -> float:
    v = budget_violation(gmacs, params_m, ctx.space.budget, ms, ctx.latency_budget_ms)
    return v if v > 0 else 1.0  # refused by the gate, so infeasible whatever the numbers say


def memory_study(
    ctx: ProposalContext,
    sampler: optuna.samplers.BaseSampler,
    dists: dict[str, BaseDistribution],
    filler: float,
    generation: tuple[str, int] | None = None,
) -> optuna.Study:
    """An in-memory study of the memory for one of Optuna's samplers.

    Completed candidates enter with their score (and cost: `ctx.cost_objective`); over-budget,
    diverged, out-of-memory and failed ones as constraint violations
    (`create_trial(constraints=...)`), which the samplers rank below every feasible trial,
    valued `filler` (and their own cost when known); ones successive halving stopped as PRUNED
    trials with the score they reached. `generation`: (system-attribute key, population size)
    of a genetic sampler, whose generations are then the trials in order, population by
    population (NSGA-II reads them from there).
    """
    objective = ctx.cost_objective
    costs = [c for t in ctx.memory if t.evaluated and (c := t.cost(objective or "")) is not None]
    cost_filler = max(costs, default=0.0)
    study = optuna.create_study(directions=["minimize"] * len(ctx.objectives), sampler=sampler)
    kept_keys = {t.arch.key() for t in ctx.memory if t.arch and t.status not in UNTRAINED}
    complete = 0
    for record in ctx.memory:
        if record.arch is None or record.status in ("pending", "running", "screened-out"):
            continue  # screened out: a prediction, not a measurement a sampler could learn from
        params = encode(ctx.space, record.arch, dists)
        if params is None:
            continue
        if record.status == "pruned" and record.fidelity and record.score is not None:
            # TPE ranks pruned trials by how far they got, then by their score there
            study.add_trial(
                create_trial(
                    state=TrialState.PRUNED,
                    params=params,
                    distributions=dists,
                    intermediate_values={record.fidelity[0]: record.score},
                    constraints={"budget": 0.0},
                )
            )
            continue
        cost = record.cost(objective) if objective else None
        if record.evaluated:
            if objective is not None and cost is None:
                continue  # scored without the cost this study needs (cannot happen in a search)
            value, violation = record.score, 0.0
        elif record.status == "rejected" and record.arch.key() in kept_keys:
            continue  # a duplicate: its architecture is in the memory already
        elif record.status == "rejected" and record.gmacs is not None:
            value = filler
            violation = _violation(ctx, record.gmacs, record.params_m, record.latency_ms)
        else:
            value, violation = filler, 1.0
        system = {generation[0]: complete // generation[1]} if generation else None
        study.add_trial(
            create_trial(
                values=[value]
                if objective is None
                else [value, cost if cost is not None else cost_filler],  # type: ignore[list-item]
                params=params,
                distributions=dists,
                constraints={"budget": violation},
                system_attrs=system,
            )
        )
        complete += 1
    return study


class OptunaSamplerProposer(Proposer):
    """Draws from one of Optuna's samplers on the memory's study (`memory_study`), rebuilt each
    round. Draws the check rejects this round are told to the study as constraint violations
    (over budget) or failures (outside the space, duplicates), so the sampler moves away from
    them; accepted draws stay running."""

    name = "optuna"
    max_tries = 200

    def _sampler(self, ctx: ProposalContext) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _study(
        self, ctx: ProposalContext, dists: dict[str, BaseDistribution], filler: float
    ) -> optuna.Study:
        return memory_study(ctx, self._sampler(ctx), dists, filler)

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        dists = distributions(ctx.space)
        scores = [t.score for t in ctx.memory if t.evaluated]
        filler = max(scores) if scores else 0.0  # infeasible trials need a value; TPE ignores it
        with _quiet_optuna():
            study = self._study(ctx, dists, filler)
            current: list[optuna.Trial] = []

            def draw() -> tuple[Any, str]:
                current.append(study.ask(dists))
                return decode(current[-1].params), f"{self.label} sample"

            def feedback(raw: Any, verdict: Verdict) -> None:
                if verdict.ok:
                    return  # stays running (TPE's constant liar steers the next draws elsewhere)
                trial = current[-1]
                if verdict.cost is not None:
                    v = _violation(
                        ctx, verdict.cost.gmacs, verdict.cost.params_m, verdict.latency_ms
                    )
                    trial.set_constraint("budget", v)
                    study.tell(trial, [filler] * len(ctx.objectives))
                elif ctx.cost_objective is not None:
                    # multi-objective TPE ignores a failed trial and would draw the same
                    # combination again and again: a refused draw is a violation instead
                    trial.set_constraint("budget", 1.0)
                    study.tell(trial, [filler] * len(ctx.objectives))
                else:  # outside the space or a duplicate: no information about the objective
                    study.tell(trial, state=TrialState.FAIL)

            return fill_round(ctx, lambda _: draw, self.max_tries, self.name, feedback)

    @property
    def label(self) -> str:
        return self.name.upper()


class TPEProposer(OptunaSamplerProposer):
    """Optuna's TPE (multi-objective TPE with two objectives), with the budget as a constraint
    (`create_trial(constraints=...)`, optuna's successor of `constraints_func`); the constant
    liar keeps a round diverse."""

    name = "tpe"

    def __init__(
        self, *, n_startup_trials: int = 10, n_ei_candidates: int = 24, max_tries: int = 200
    ) -> None:
        self.n_startup_trials = n_startup_trials  # random draws before TPE models the memory
        self.n_ei_candidates = n_ei_candidates
        self.max_tries = max_tries

    def _sampler(self, ctx: ProposalContext) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            n_startup_trials=self.n_startup_trials,
            n_ei_candidates=self.n_ei_candidates,
            seed=ctx.rng.randrange(2**32),
            constant_liar=True,
        )


class NSGAIIProposer(OptunaSamplerProposer):
    """Optuna's NSGA-II (Deb et al. 2002): each generation's children are bred by crossover and
    mutation from the elite of the earlier ones (non-dominated rank, then crowding distance;
    constraint violators last). The memory's trials form the generations in order,
    P each; until the first is full the draws are uniform. P is `population_size`, or left
    unset half the search's evaluations, between 2 and 8."""

    name = "nsga2"
    max_population = 8

    def __init__(self, *, population_size: int | None = None, max_tries: int = 200) -> None:
        if population_size is not None and population_size < 2:
            raise UserError(
                f"population_size={population_size} must be at least 2", field="population_size"
            )
        self.population_size = population_size
        self.max_tries = max_tries

    @property
    def label(self) -> str:
        return "NSGA-II"

    def population_for(self, ctx: ProposalContext) -> int:
        """P for this search: `population_size` if given, else from the evaluation budget."""
        return budget_population(ctx, self.population_size, self.max_population)

    def _sampler(self, ctx: ProposalContext) -> optuna.samplers.NSGAIISampler:
        return optuna.samplers.NSGAIISampler(
            population_size=self.population_for(ctx), seed=ctx.rng.randrange(2**32)
        )

    def _study(
        self, ctx: ProposalContext, dists: dict[str, BaseDistribution], filler: float
    ) -> optuna.Study:
        sampler = self._sampler(ctx)
        key = sampler._get_generation_key()  # where NSGA-II keeps a trial's generation
        return memory_study(ctx, sampler, dists, filler, (key, self.population_for(ctx)))
