"""The search's candidates as Optuna trials: open them, build their evaluation jobs, tell results.

A round's accepted candidates become trials (a kill leaves them RUNNING; reopened, they keep
their numbers and resume from their checkpoints). Each trial is evaluated in steps: without
successive halving one step, the whole proxy run in `trials/NNNNN/`; with it one step per rung,
the lower rungs in `trials/NNNNN/rung-SSSSSSS/` continuing the same training run in
`trials/NNNNN/train/`, until the pruner stops the candidate or it completes the proxy run.
Both schedules (rounds, async) drive these steps; only when they start differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from diffnas.data.datasets import DataSpec
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec
from diffnas.gate.entry import RoundEntry
from diffnas.layout import trial_dir
from diffnas.progress import task as progress_task
from diffnas.search import halving
from diffnas.search import study as study_mod
from diffnas.search.artifacts import attach_sample_grid
from diffnas.search.config import SearchConfig
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


def proxy_rungs(config: SearchConfig, space: SearchSpace, data: DataSpec) -> list[int]:
    """Training steps at which a candidate is scored: the whole proxy run, or the rungs of
    successive halving (`diffnas.search.halving`)."""
    total = config.proxy.train_recipe(space.objective, data.kind).steps
    return halving.rung_steps(total, config.halving_rungs, config.halving_eta)


def screened_line(entry: RoundEntry) -> str:
    """ "screened out by gp (predicted 41.2, rank 3): not trained" """
    mark = entry.screen
    assert mark is not None
    guess = f"predicted {mark.predicted:.4g}, " if mark.predicted is not None else ""
    return f"screened out by {mark.screener} ({guess}rank {mark.rank}): not trained"


@dataclass(frozen=True)
class PendingEvaluation:
    """A candidate's next evaluation: its open trial, architecture and the rung it trains to."""

    trial: Any  # optuna.Trial
    arch: ArchConfig
    rung: int


class CandidateTrials:
    """The trials of one search: opening, evaluating (through the executor) and telling them."""

    def __init__(
        self,
        config: SearchConfig,
        space: SearchSpace,
        data: DataSpec,
        study: optuna.Study,
        executor: Executor,
        run_dir: Path,
        console: Console,
        rungs: list[int],
    ) -> None:
        self.config, self.space, self.data, self.study = config, space, data, study
        self.executor, self.run_dir, self.console, self.rungs = executor, run_dir, console, rungs

    def job(
        self,
        arch: ArchConfig,
        spec: EvalSpec,
        workdir: Path,
        max_steps: int | None = None,
        train_dir: Path | None = None,
    ) -> EvalJob:
        return EvalJob(
            arch=arch,
            objective=self.space.objective,
            data=self.data,
            spec=spec,
            recipe=spec.train_recipe(self.space.objective, self.data.kind),
            seed=self.config.seed,
            workdir=str(workdir),
            cache_dir=str(self.run_dir.parent / "cache"),
            max_steps=max_steps,
            train_dir=str(train_dir) if train_dir else None,
        )

    def open_trials(self, r: int, entries: list[RoundEntry]) -> list[PendingEvaluation]:
        """Record the round's rejections and screened-out candidates (no training), and open
        (or reopen) a trial per selected candidate: the next evaluation step of each that is
        not finished."""
        by_slot = study_mod.trials_by_slot(self.study)
        score_name = self.config.proxy.score.label
        rungs = self.rungs
        pending: list[PendingEvaluation] = []
        for e in entries:
            existing = by_slot.get((r, e.slot))
            if e.reason is not None:
                if existing is None:
                    number = study_mod.add_rejected(self.study, self.space, e, r, score_name)
                    self.console.print(  # the reason may quote the LLM: escape its "[...]"
                        f"  trial {number}: [yellow]rejected[/yellow] - {escape(e.reason)}"
                    )
                continue
            if e.screened_out:
                if existing is None:
                    number = study_mod.add_screened_out(self.study, self.space, e, r, score_name)
                    self.console.print(f"  trial {number}: [dim]{escape(screened_line(e))}[/dim]")
                continue
            if existing is not None and existing.state.is_finished():
                continue
            assert e.arch is not None  # an accepted entry parsed into the space
            rung = 0
            if existing is None:
                trial = study_mod.start_trial(self.study, self.space, e, r, score_name)
            elif existing.state == TrialState.WAITING:
                trial = study_mod.ask_waiting(self.study, self.space)
            else:  # RUNNING: interrupted by a kill; the same trial continues from its checkpoint
                trial = study_mod.reopen_trial(self.study, existing)
                rung = halving.next_rung(existing, rungs)
                if existing.last_step is not None and not halving.goes_on_after_resume(trial):
                    study_mod.prune_trial(self.study, trial, existing.last_step, rungs[-1])
                    continue
                self.console.print(f"  trial {trial.number}: resuming")
            self.console.print(
                f"  trial {trial.number}: {e.arch.summary()} ({e.gmacs:.3g} GMACs) ..."
            )
            pending.append(PendingEvaluation(trial, e.arch, rung))
        return pending

    def evaluate_together(
        self, r: int, pending: list[PendingEvaluation]
    ) -> list[PendingEvaluation]:
        """Train each pending candidate to its next rung and score it there, all at once; tell
        the finished ones and return those that go on to a higher rung."""
        rungs = self.rungs
        jobs = [self.step_job(step) for step in pending]
        what = "proxy training and scoring"
        if len(rungs) > 1:
            what += f" to {rungs[min(step.rung for step in pending)]} of {rungs[-1]} steps"
        going_on = []
        with progress_task(f"round {r + 1}: {what} {len(jobs)}"):
            for index, result in self.executor.run_many(jobs):
                following = self.after_step(pending[index], result)
                if following is not None:
                    going_on.append(following)
        return going_on

    def is_last(self, step: PendingEvaluation) -> bool:
        return step.rung == len(self.rungs) - 1

    def step_dir(self, step: PendingEvaluation) -> Path:
        """Where a step's evaluation lives: the trial folder for the whole proxy run (as without
        halving), a folder of its own for a lower rung (job, result, samples)."""
        folder = trial_dir(self.run_dir, step.trial.number)
        return folder if self.is_last(step) else folder / f"rung-{self.rungs[step.rung]:07d}"

    def step_job(self, step: PendingEvaluation) -> EvalJob:
        """The job of a candidate's next evaluation: its next rung, or its whole proxy run."""
        if self.is_last(step):
            return self.job(step.arch, self.config.proxy, self.step_dir(step))
        train_dir = self.step_dir(step).parent / "train"  # every rung continues one run
        steps = self.rungs[step.rung]
        return self.job(step.arch, self.config.proxy, self.step_dir(step), steps, train_dir)

    def after_step(self, step: PendingEvaluation, result: EvalResult) -> PendingEvaluation | None:
        """Tell a finished evaluation; the candidate's next step when it goes on to a higher rung."""
        trial, folder = step.trial, self.step_dir(step)
        if self.is_last(step) or result.status != "complete":
            self.tell(trial, result, folder)
            return None
        study_mod.record_result(trial, result, str(folder.relative_to(self.run_dir)))
        assert result.score is not None  # a complete evaluation has its score
        steps = self.rungs[step.rung]
        metric = escape(self.config.proxy.score.label)
        line = f"  trial {trial.number}: {metric} {result.score:.4g} at {steps} steps"
        if halving.goes_on(trial, result.score, steps):
            self.console.print(f"{line}, goes on")
            return PendingEvaluation(trial, step.arch, step.rung + 1)
        self.console.print(f"{line}, [yellow]pruned[/yellow]")
        attach_sample_grid(trial, folder, self.run_dir)
        study_mod.prune_trial(self.study, trial, steps, self.rungs[-1])
        return None

    def cost(self, trial: Any) -> float | None:
        """A multi-objective trial's second value, measured at the gate and stored with the
        candidate: its latency (ms per forward pass) or its GMACs; None with one objective."""
        objective = self.config.cost_objective
        if objective is None:
            return None
        value = trial.user_attrs.get("latency_ms" if objective == "latency" else "gmacs")
        assert value is not None, f"trial {trial.number} has no measured {objective}"
        return float(value)

    def tell(self, trial: Any, result: EvalResult, folder: Path) -> None:
        """Finish the trial with the outcome of its evaluation in `folder`."""
        # the grid goes in while the trial still runs: Optuna refuses artifacts on finished ones
        attach_sample_grid(trial, folder, self.run_dir)
        cost = self.cost(trial)
        study_mod.finish_trial(
            self.study, trial, result, str(folder.relative_to(self.run_dir)), cost
        )
        if result.status == "complete":
            metric = escape(self.config.proxy.score.label)
            self.console.print(
                f"  trial {trial.number}: {metric} {result.score:.4g} ({result.wall_s:.0f} s)"
            )
        else:
            self.console.print(
                f"  trial {trial.number}: [red]{result.status}[/red] {escape(result.error or '')}"
            )
