"""Multi-fidelity evaluation: successive halving over candidates, on Optuna's pruner.

With `halving_rungs = R > 1` every candidate is first trained to the lowest rung (the proxy
run's steps / eta^(R-1)) and scored there; the score is reported to its Optuna trial as an
intermediate value, and Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving,
Li et al. 2020) says whether it goes on: it does when its score is among the best 1/eta of all
candidates that reached that rung so far, in this round and earlier ones. A candidate that goes
on resumes its own training run from the checkpoint to the next rung (the LR schedule spans the
whole proxy run), so the last rung is exactly the proxy evaluation without halving. A stopped
candidate becomes a PRUNED trial whose value is its last score; the memory shows it with the
fidelity it reached, and only candidates scored at the last rung compete for promotion.

The rule (and its known bias: the first candidates at a rung go on while the rung is nearly
empty) is Optuna's; this module only maps rungs to training steps and keeps that state in the
study, so a killed search resumes each candidate at the rung it reached.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from diffnas.errors import UserError


def rung_steps(total_steps: int, rungs: int, eta: int) -> list[int]:
    """Training steps at which a candidate is scored: total / eta^(rungs-1), ... total / eta, total."""
    if rungs == 1:
        return [total_steps]
    lowest = total_steps // eta ** (rungs - 1)
    if lowest < 1:
        raise UserError(
            f"--halving-rungs {rungs} with --halving-eta {eta} needs a proxy run of at least "
            f"{eta ** (rungs - 1)} steps (it has {total_steps}); use fewer rungs or a smaller eta.",
            field="halving_rungs",
        )
    return [lowest * eta**k for k in range(rungs - 1)] + [total_steps]


def make_pruner(rungs: list[int], eta: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for `rung_steps` (none when halving is off)."""
    if len(rungs) == 1:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=rungs[0], reduction_factor=eta)


def goes_on(trial: optuna.Trial, score: float, step: int) -> bool:
    """Report a rung's score and ask the pruner whether the candidate trains on."""
    trial.report(score, step)
    return not trial.should_prune()


def goes_on_after_resume(trial: optuna.Trial) -> bool:
    """Ask again for a resumed trial's last reported rung. The pruner records each rung it lets
    a trial pass, so a decided "go on" stays "go on"; an undecided rung (killed between its
    score and the answer) is decided now."""
    return not trial.should_prune()


def next_rung(frozen: FrozenTrial, rungs: list[int]) -> int:
    """The rung a (resumed) trial trains to next: the first above the last step it reported."""
    last = frozen.last_step
    if last is None:
        return 0
    return next((k for k, steps in enumerate(rungs) if steps > last), len(rungs) - 1)
