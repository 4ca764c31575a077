"""Successive halving in the search: Optuna's pruner decides at each rung, pruned candidates keep
the fidelity they reached, survivors continue their own training run, a kill resumes exactly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from optuna.trial import TrialState

from diffnas.errors import UserError
from diffnas.execute.base import InlineExecutor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec, ScoreSpec
from diffnas.propose.prompt import memory_entry
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.halving import rung_steps
from diffnas.search.loop import SearchRun
from diffnas.search.plan import SearchPlan
from diffnas.space.search_space import load_space
from diffnas.train.trainer import read_status

EVAL = EvalSpec(
    recipe="proxy",
    recipe_overrides={"steps": 8, "batch_size": 8, "log_every": 2, "checkpoint_every": 2},
    score=ScoreSpec(num_samples=16, steps=2, batch_size=16),
    device="cpu",
)


def config(**overrides) -> SearchConfig:
    base = dict(
        space="tiny", data="digits", data_subset=200, proposer="random", rounds=2, per_round=4,
        promote=0, proxy=EVAL, final=EVAL, halving_rungs=3, halving_eta=2,
    )  # fmt: skip
    base.update(overrides)
    return SearchConfig(**base)


def study_trials(run_dir: Path) -> list:
    return [
        t
        for t in study_mod.open_study(run_dir).get_trials(deepcopy=False)
        if "round" in t.user_attrs
    ]


def asha_keeps(value: float, others_at_rung: list[float], eta: int) -> bool:
    """Asynchronous successive halving's promotion rule (Li et al. 2020, Optuna's variant for
    the first eta-1 arrivals): in the best floor(n/eta) of the n scores at the rung so far,
    or the best of them while n < eta."""
    ranked = sorted([*others_at_rung, value])
    return value <= ranked[max(len(ranked) // eta - 1, 0)]


def test_rung_steps_divide_the_proxy_run_by_eta() -> None:
    assert rung_steps(400, 1, 3) == [400]
    assert rung_steps(400, 3, 2) == [100, 200, 400]
    assert rung_steps(400, 3, 3) == [44, 132, 400]
    assert rung_steps(20_000, 4, 4) == [312, 1248, 4992, 20_000]
    with pytest.raises(UserError) as err:
        rung_steps(8, 4, 3)
    assert err.value.field == "halving_rungs" and "at least 27 steps" in str(err.value)


def test_plan_refuses_rungs_the_proxy_run_cannot_hold() -> None:
    with pytest.raises(UserError, match="at least 27 steps"):
        SearchPlan(config(halving_rungs=4, halving_eta=3)).validate()


def test_halving_prunes_by_asha_continues_survivors_and_spends_less(tmp_path) -> None:
    summary = SearchRun(config(), tmp_path / "halving").run()
    trials = study_trials(tmp_path / "halving")
    assert len(trials) == 8 and summary["trials"] == 8
    # replay the pruner's decisions in trial order (the inline executor's completion order)
    at_rung: dict[int, list[float]] = {2: [], 4: []}
    for t in trials:
        for step in (2, 4):
            if step not in t.intermediate_values:
                break
            value = t.intermediate_values[step]
            kept = asha_keeps(value, at_rung[step], eta=2)
            at_rung[step].append(value)
            if not kept:
                assert t.state == TrialState.PRUNED and t.last_step == step
                break
        else:
            assert t.state == TrialState.COMPLETE
    states = [t.state for t in trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    space = load_space("tiny")
    for record in study_mod.load_memory(study_mod.open_study(tmp_path / "halving")):
        folder = tmp_path / "halving" / "trials" / f"{record.number:05d}" / "train"
        if record.status == "pruned":
            steps, total = record.fidelity
            assert total == 8 and steps in (2, 4)
            assert read_status(folder).step == steps  # its training stopped at the rung
            assert f"after {steps} of 8 proxy steps" in memory_entry(space, record)
            assert not record.evaluated  # never promoted against whole-run scores
        else:
            assert record.status == "complete" and read_status(folder).step == 8

    # the same search without halving trains every candidate 8 steps: same candidates (the
    # random proposer only avoids duplicates), and a survivor's score is the same, since it
    # continued one training run whose schedule spans all 8 steps
    SearchRun(config(halving_rungs=1), tmp_path / "plain").run()
    plain = {t.number: t for t in study_trials(tmp_path / "plain")}
    assert all(t.state == TrialState.COMPLETE for t in plain.values())
    for t in trials:
        assert t.params == plain[t.number].params
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(plain[t.number].value, rel=1e-4)
    steps_halving = sum(t.user_attrs["train"]["steps"] for t in trials)
    steps_plain = sum(t.user_attrs["train"]["steps"] for t in plain.values())
    assert steps_plain == 8 * 8 and steps_halving < steps_plain


class KilledAfter(InlineExecutor):
    """Evaluates `n` jobs, then dies as a killed search would (nothing after it is told)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def run_many(self, jobs: Sequence[EvalJob]) -> Iterator[tuple[int, EvalResult]]:
        for index, result in super().run_many(jobs):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            yield index, result


def test_killed_halving_search_resumes_every_candidate_at_its_rung(tmp_path) -> None:
    cfg = config(rounds=1)
    SearchRun(cfg, tmp_path / "whole").run()
    whole = study_trials(tmp_path / "whole")
    run_dir = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # dies in the second rung, before all are told
        SearchRun(cfg, run_dir, executor=KilledAfter(5)).run()
    assert any(t.state == TrialState.RUNNING for t in study_trials(run_dir))
    SearchRun(cfg, run_dir).run()
    resumed = study_trials(run_dir)
    assert [t.number for t in resumed] == [t.number for t in whole]
    for a, b in zip(resumed, whole):
        assert a.state == b.state and a.intermediate_values == pytest.approx(
            b.intermediate_values, rel=1e-4
        )


def test_a_search_ranked_by_training_loss_samples_nothing(tmp_path) -> None:
    loss = EVAL.model_copy(update={"score": EVAL.score.model_copy(update={"metric": "loss"})})
    SearchRun(config(rounds=1, per_round=3, proxy=loss), tmp_path / "run").run()
    memory = study_mod.load_memory(study_mod.open_study(tmp_path / "run"))
    assert {t.status for t in memory} <= {"complete", "pruned"} and len(memory) == 3
    for t in memory:
        assert t.score_name == "training loss" and 0 < t.score < 2
        assert not list((tmp_path / "run" / "trials").rglob("samples.png"))
