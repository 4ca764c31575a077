"""The two schedules of a search, side by side: how requests to the proposer and the
evaluations of their candidates interleave. Both drive the same parts (`Schedule`) and return
the reason the search stopped proposing.

`rounds` (the default, `run_rounds`): request r is round r; it asks for K candidates, its
accepted ones are evaluated together (a concurrent executor runs them at once; rung by rung
under successive halving), and round r + 1 sees every outcome. It ends after the configured
rounds, or when a budget stops it.

`async` (`--schedule async`, `run_async`): every executor slot kept busy, the proposer asked
for the next candidate(s) as soon as a slot frees. Here a "round" is one request: each has a
round file of its own (`rounds/round-RRR.json`), asks for as many candidates as there are free
slots (all of them at the start), with the memory as it stands - finished trials with their
scores, the rest "being evaluated". Under successive halving a candidate that goes on keeps
its slot. The round file records how many were asked and which finished trials the request
saw, so
- a resumed search serves the requests it made from their files and resumes their open
  trials (same numbers, from their checkpoints), then asks on;
- a replay (`--replay DIR`) makes request r only once the trials DIR's request r saw have
  finished here, shows exactly those, and asks for the same number: the request is the
  recorded one whatever order this run's evaluations finish in.
It ends when rounds x K candidates were proposed and evaluated, or a budget stops it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.gate.entry import RoundFile
from diffnas.search.requests import Requests, round_path
from diffnas.search.trials import CandidateTrials, PendingEvaluation


@dataclass(frozen=True)
class TimeBudget:
    """`--time-budget-s`, counted from `start` (a `time.monotonic()` reading)."""

    seconds: float | None  # None: no time budget
    start: float

    def stop_reason(self) -> str | None:
        """The stop reason once the budget is spent; None while time is left (or no budget)."""
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            return f"time budget of {self.seconds:g} s spent"
        return None


@dataclass(frozen=True)
class Schedule:
    """What a schedule drives: the requests, the trials their candidates become, the executor
    that evaluates them, and when to stop."""

    requests: Requests  # request r's entries: `saved(r)`, `make(r, k, seen, num_rounds)`
    trials: CandidateTrials  # open, evaluate and tell the candidates' trials
    executor: Executor  # its slots, and `submit` for one evaluation at a time
    rounds: int  # the configured rounds (requests of K under `rounds`)
    per_round: int  # K
    time: TimeBudget
    replay: Path | None = None  # --replay DIR: under `async`, DIR's requests in DIR's order


def run_rounds(s: Schedule) -> str:
    """Round by round: ask for K, evaluate the round's candidates together, then the next."""
    for r in range(s.rounds):
        if stop := s.time.stop_reason():
            return stop
        entries, stop = s.requests.make(r)
        if stop:
            return stop
        if entries is not None:
            pending = s.trials.open_trials(r, entries)
            while pending:  # rung by rung under successive halving, each told as it finishes
                pending = s.trials.evaluate_together(r, pending)
    return "all rounds done"


def expected_requests(total: int, proposed: int, r: int, k: int) -> int:
    """Requests the search will have made if each asks for `k`: the prompt's "round r of n"."""
    return r + math.ceil(max(total - proposed, k) / k)


def run_async(s: Schedule) -> str:
    """Propose and evaluate until rounds x K candidates are done; the stop reason."""
    total = s.rounds * s.per_round
    slots = max(1, s.executor.slots)
    recorded = s.replay
    in_flight: dict[Future[Any], PendingEvaluation] = {}

    def submit(step: PendingEvaluation) -> None:
        in_flight[s.executor.submit(s.trials.step_job(step))] = step

    def finished() -> set[int]:
        trials = s.trials.study.get_trials(deepcopy=False)
        return {t.number for t in trials if t.state.is_finished()}

    # the requests made before a kill: served from their files, their open trials resumed
    proposed, r = 0, 0
    while (saved := s.requests.saved(r)) is not None:
        for step in s.trials.open_trials(r, saved.entries):
            submit(step)
        proposed += saved.asked or len(saved.entries)
        r += 1

    stop: str | None = None
    while True:
        stop = stop or s.time.stop_reason()
        k, seen = min(slots - len(in_flight), total - proposed), None
        if recorded is not None and not stop and proposed < total:
            record = RoundFile.read(round_path(recorded, r))
            if record is None:
                stop = f"the replayed run made no request {r + 1}"
            else:
                k, seen = record.asked or len(record.entries), set(record.seen or [])
                unfinished = seen - finished()
                if unfinished:
                    k = 0  # its request waits for what it saw to finish here
                    if not in_flight:
                        raise UserError(
                            f"--replay: request {r + 1} of the recorded run saw trials "
                            f"{sorted(unfinished)} finish, which this run never evaluated; "
                            "it has diverged from the recording."
                        )
        if not stop and proposed < total and k > 0:
            num_rounds = expected_requests(total, proposed, r, k)
            entries, stop = s.requests.make(r, k=k, seen=seen, num_rounds=num_rounds)
            for step in s.trials.open_trials(r, entries or []):
                submit(step)
            proposed += k  # a failed request spends its share too: the search cannot loop on it
            r += 1
            continue
        if not in_flight:
            break
        # one finished evaluation at a time, the oldest first, then ask again: a slot frees per
        # evaluation, so a resumed search (its killed evaluations reopened) asks as the
        # uninterrupted one did, whichever of several finished evaluations `wait` saw first
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        future = next(f for f in in_flight if f in done)
        following = s.trials.after_step(in_flight.pop(future), future.result())
        if following is not None:
            submit(following)
    return stop or "all candidates proposed and evaluated"


SCHEDULES: dict[str, Callable[[Schedule], str]] = {"rounds": run_rounds, "async": run_async}
"""`--schedule`'s values and the function that runs each."""
