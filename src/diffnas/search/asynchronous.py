"""The asynchronous schedule (`--schedule async`): every executor slot kept busy, the proposer
asked for the next candidate(s) as soon as a slot frees.

Each request is a round of its own (`rounds/round-RRR.json`): it asks for as many candidates
as there are free slots (all of them at the start), with the memory as it stands - finished
trials with their scores, the rest "being evaluated". Under successive halving a candidate
that goes on keeps its slot. The round file records how many were asked and which finished
trials the request saw, so
- a resumed search serves the requests it made from their files and resumes their open
  trials (same numbers, from their checkpoints), then asks on;
- a replay (`--replay DIR`) makes request r only once the trials DIR's request r saw have
  finished here, shows exactly those, and asks for the same number: the request is the
  recorded one whatever order this run's evaluations finish in.
The search ends when rounds x K candidates were proposed and evaluated, or a budget stops it.
"""

from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffnas.errors import UserError
from diffnas.gate.entry import RoundFile

if TYPE_CHECKING:  # the loop imports this module
    from diffnas.search.loop import SearchRun
    from diffnas.search.trials import Step


def expected_requests(total: int, proposed: int, r: int, k: int) -> int:
    """Requests the search will have made if each asks for `k`: the prompt's "round r of n"."""
    return r + math.ceil(max(total - proposed, k) / k)


def run_async(search: SearchRun, start: float) -> str:
    """Propose and evaluate until rounds x K candidates are done; the stop reason."""
    cfg = search.config
    total = cfg.rounds * cfg.per_round
    slots = max(1, search.executor.slots)
    recorded = Path(cfg.replay) / "rounds" if cfg.replay else None
    in_flight: dict[Future[Any], Step] = {}

    def submit(step: Step) -> None:
        in_flight[search.executor.submit(search.trials.step_job(step))] = step

    def finished() -> set[int]:
        return {t.number for t in search.study.get_trials(deepcopy=False) if t.state.is_finished()}

    # the requests made before a kill: served from their files, their open trials resumed
    proposed, r = 0, 0
    requests = search.requests
    assert requests is not None
    while (saved := requests.saved(r)) is not None:
        for step in search.trials.open_trials(r, saved.entries):
            submit(step)
        proposed += saved.asked or len(saved.entries)
        r += 1

    stop: str | None = None
    while True:
        stop = stop or search.time_spent(start)
        k, seen = min(slots - len(in_flight), total - proposed), None
        if recorded is not None and not stop and proposed < total:
            record = RoundFile.read(recorded / f"round-{r:03d}.json")
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
            entries, stop = requests.make(r, k=k, seen=seen, num_rounds=num_rounds)
            for step in search.trials.open_trials(r, entries or []):
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
        following = search.trials.after_step(in_flight.pop(future), future.result())
        if following is not None:
            submit(following)
    return stop or "all candidates proposed and evaluated"
