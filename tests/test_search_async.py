"""The asynchronous schedule: a slot that frees asks the proposer at once; every request is
recorded (how many it asked, which outcomes it saw), so replay and resume are exact."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from diffnas.execute.base import InlineExecutor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec, ScoreSpec
from diffnas.gate.entry import RoundFile
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.runs import read_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.search.schedules import expected_requests
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from doubles import OpenAILoopback

SPACE = load_space("tiny")
REF = SPACE.proposal_of(get_reference("tiny-digits"))
EVAL = EvalSpec(
    recipe="proxy",
    recipe_overrides={"steps": 8, "batch_size": 8, "log_every": 4, "checkpoint_every": 4},
    score=ScoreSpec(num_samples=16, steps=2, batch_size=16),
    device="cpu",
)
# distinct in-budget candidates for the loopback "model": a fresh pair per request
_rng = random.Random(0)
_draws = (SPACE.sample(_rng) for _ in itertools.count())
_fits = (a for a in _draws if budget_verdict(measure_cost(a), SPACE.budget)[0])
_distinct = {a.key(): a for a in itertools.islice(_fits, 40)}
POOL = [SPACE.proposal_of(a) for a in _distinct.values()][:12]


def config(**overrides) -> SearchConfig:
    base = dict(
        space="tiny", data="digits", data_subset=200, rounds=3, per_round=2, promote=0,
        proxy=EVAL, final=EVAL, schedule="async", llm_timeout_s=5.0, llm_backoff_s=0.0,
    )  # fmt: skip
    base.update(overrides)
    return SearchConfig(**base)


def rounds(run_dir: Path) -> list[RoundFile]:
    files = sorted((run_dir / "rounds").glob("round-*.json"))
    return [RoundFile.model_validate(read_json(f)) for f in files]


def outcome(run_dir: Path) -> list[tuple]:
    study = study_mod.open_study(run_dir)
    return [(t.number, t.params, t.state.name) for t in study.get_trials(deepcopy=False)]


def values(run_dir: Path) -> list[float]:
    return [t.value for t in study_mod.open_study(run_dir).get_trials(deepcopy=False)]


def test_expected_requests_counts_what_is_left_at_this_size() -> None:
    assert expected_requests(total=6, proposed=0, r=0, k=2) == 3
    assert expected_requests(total=6, proposed=2, r=1, k=1) == 5
    assert expected_requests(total=6, proposed=5, r=4, k=1) == 5


def test_async_pool_search_asks_as_slots_free_and_replays_exactly(tmp_path) -> None:
    assert len(POOL) == 12
    handed = itertools.count()

    def responder(body: dict) -> str:
        n = next(handed)  # a new pair of candidates for every request
        arch = [POOL[2 * n], POOL[2 * n + 1]]  # a request for one takes the first
        return json.dumps({"candidates": [{"rationale": "x", "arch": a} for a in arch]})

    with OpenAILoopback(responder=responder) as server:
        cfg = config(llm="openai:test-model", base_url=server.base_url, executor="pool", workers=2)
        first = tmp_path / "first"
        summary = SearchRun(cfg, first).run()
    files = rounds(first)
    assert summary["stop_reason"] == "all candidates proposed and evaluated"
    assert files[0].asked == 2 and files[0].seen == []  # both slots free at the start
    assert sum(f.asked for f in files) == 6  # rounds x K candidates in all
    for f in files[1:]:  # each later request came when a slot freed, seeing what had finished
        assert 1 <= f.asked <= 2 and len(f.seen) >= 1
    for earlier, later in zip(files, files[1:]):  # outcomes only accumulate
        assert set(earlier.seen) <= set(later.seen)
    # some request came while a candidate was still running (what the replay must hide)
    assert any(len(f.seen) < sum(g.asked for g in files[:i]) for i, f in enumerate(files))
    assert [state for *_, state in outcome(first)] == ["COMPLETE"] * 6

    # the server is gone; a sequential replay finishes evaluations in another order, yet every
    # request is the recorded one (a miss would stop it) and so is every trial
    replay = cfg.model_copy(update={"replay": str(first), "base_url": None, "executor": "inline"})
    SearchRun(replay, tmp_path / "replay").run()
    assert outcome(tmp_path / "replay") == outcome(first)
    assert values(tmp_path / "replay") == pytest.approx(values(first), rel=1e-4)
    assert [(f.asked, f.seen) for f in rounds(tmp_path / "replay")] == [
        (f.asked, f.seen) for f in files
    ]


class TwoSlots(InlineExecutor):
    """Sequential, but claims two slots: the search asks for two candidates at the start."""

    @property
    def slots(self) -> int:
        return 2


class TwoSlotsKilled(TwoSlots):
    """Evaluates `n` jobs, then dies as a killed search would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def _run(self, job: EvalJob) -> EvalResult:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super()._run(job)


def test_killed_async_search_resumes_to_the_same_trials(tmp_path) -> None:
    cfg = config(proposer="random")
    SearchRun(cfg, tmp_path / "whole", executor=TwoSlots()).run()
    with pytest.raises(KeyboardInterrupt):
        SearchRun(cfg, tmp_path / "killed", executor=TwoSlotsKilled(3)).run()
    SearchRun(cfg, tmp_path / "killed", executor=TwoSlots()).run()
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "whole")
    assert values(tmp_path / "killed") == pytest.approx(values(tmp_path / "whole"), rel=1e-4)
    assert [(f.asked, f.seen) for f in rounds(tmp_path / "killed")] == [
        (f.asked, f.seen) for f in rounds(tmp_path / "whole")
    ]
