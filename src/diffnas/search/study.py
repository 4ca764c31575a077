"""The search memory stored as an Optuna study (SQLite in the run folder, or any DB URL).

Each candidate is one trial:
- params: the architecture (`diffnas.search.params`), when it parsed into the space;
- value: the proxy score (minimised);
- user attrs: round, slot, proposer, origin ("llm", "llm-edit", "fallback", "warm-start", or
  the baseline's name), rationale, status, reason, cost, scores with their protocol, the raw
  proposal, and under `--screen` the screener's verdict (`screen`: predicted score, rank).
States: COMPLETE (scored; also a warm-start trial measured by an earlier search, round -1),
FAIL (rejected before training, screened out by a screener, diverged, oom, failed),
PRUNED (stopped by successive halving: its value is the score at the last rung it reached,
its intermediate values the score at each rung), RUNNING (being evaluated, or interrupted by a
kill: resumed by the loop), WAITING (enqueued).
Proposals enter through Optuna's ask-and-tell with enqueued trials.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from diffnas.execute.job import EvalResult
from diffnas.gate.entry import RoundEntry
from diffnas.gate.memory import UNTRAINED, TrialRecord
from diffnas.space import params as arch_params
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace

STUDY_NAME = "diffnas"


def storage_url(run_dir: Path, url: str | None) -> str:
    return url or f"sqlite:///{(run_dir / 'study.db').resolve()}"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (a study created, each trial finished) off inside the block only:
    the search prints its own progress, and Optuna's verbosity is process-wide."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def open_study(
    run_dir: Path, url: str | None = None, pruner: optuna.pruners.BasePruner | None = None
) -> optuna.Study:
    """Create or load the run's study (`pruner`: successive halving, `diffnas.search.halving`)."""
    with quiet_optuna():
        return optuna.create_study(
            study_name=STUDY_NAME,
            storage=storage_url(run_dir, url),
            direction="minimize",
            pruner=pruner,
            load_if_exists=True,
        )


def _attrs(record: dict[str, Any]) -> dict[str, Any]:
    """User attrs must be JSON-serialisable; keep them flat and small."""
    return {k: v for k, v in record.items() if v is not None}


def add_rejected(
    study: optuna.Study, space: SearchSpace, entry: RoundEntry, round_index: int, score_name: str
) -> int:
    """Record a proposal that failed the check: a FAIL trial with its reason; no training spent."""
    params, dists = {}, {}
    if entry.arch is not None and space.contains(entry.arch):
        params = arch_params.encode(space, entry.arch)
        dists = arch_params.distributions(space)
    trial = optuna.trial.create_trial(
        state=TrialState.FAIL,
        params=params,
        distributions=dists,
        user_attrs=_attrs({**entry.trial_attrs(round_index, score_name), "status": "rejected"}),
    )
    study.add_trial(trial)
    return study.trials[-1].number


def add_screened_out(
    study: optuna.Study, space: SearchSpace, entry: RoundEntry, round_index: int, score_name: str
) -> int:
    """Record an accepted proposal a screener ranked below the K slots: a FAIL trial (it was
    never measured, so no sampler may learn from it) with status "screened-out" and the
    screener's prediction in its `screen` attr; no training spent."""
    assert entry.arch is not None and entry.screen is not None
    params = arch_params.encode(space, entry.arch)
    trial = optuna.trial.create_trial(
        state=TrialState.FAIL,
        params=params or {},
        distributions=arch_params.distributions(space) if params else {},
        user_attrs=_attrs({**entry.trial_attrs(round_index, score_name), "status": "screened-out"}),
    )
    study.add_trial(trial)
    return study.trials[-1].number


def start_trial(
    study: optuna.Study, space: SearchSpace, entry: RoundEntry, round_index: int, score_name: str
) -> optuna.Trial:
    """Enqueue the accepted architecture and ask for it: the trial is RUNNING with it as params."""
    assert entry.arch is not None, "only an accepted entry starts a trial"
    attrs = _attrs({**entry.trial_attrs(round_index, score_name), "status": "pending"})
    study.enqueue_trial(arch_params.encode(space, entry.arch), user_attrs=attrs)
    return ask_waiting(study, space)


def ask_waiting(study: optuna.Study, space: SearchSpace) -> optuna.Trial:
    """Pop the oldest WAITING trial (an enqueued proposal) and mark it running."""
    trial = study.ask(arch_params.distributions(space))
    trial.set_user_attr("status", "running")
    return trial


def reopen_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A handle on a RUNNING trial left by an interrupted process, to finish it here."""
    return optuna.trial.Trial(study, frozen._trial_id)


def record_result(trial: optuna.Trial, result: EvalResult, eval_dir: str) -> None:
    """Store an evaluation's outcome on its trial. Under successive halving a trial is evaluated
    once per rung: scores and training are the latest rung's, wall and device time add up."""
    spent = trial.user_attrs
    attrs = {
        "scores": result.scores,
        "train": result.train,
        "wall_s": round(spent.get("wall_s", 0.0) + result.wall_s, 3),
        "device": result.device,
        "device_s": round(spent.get("device_s", 0.0) + result.device_s, 3),
        "eval_dir": eval_dir,
        "reason": result.error,
    }
    for key, value in _attrs(attrs).items():
        trial.set_user_attr(key, value)


def prune_trial(study: optuna.Study, trial: optuna.Trial, steps: int, total_steps: int) -> None:
    """End a trial that successive halving stopped: PRUNED, its value its last rung's score."""
    trial.set_user_attr("status", "pruned")
    trial.set_user_attr("fidelity", {"steps": steps, "of": total_steps})
    study.tell(trial, state=TrialState.PRUNED)


def finish_trial(
    study: optuna.Study, trial: optuna.Trial, result: EvalResult, eval_dir: str
) -> None:
    """Tell the outcome of a running trial: COMPLETE with its score, or FAIL with its status."""
    record_result(trial, result, eval_dir)
    trial.set_user_attr("status", result.status)
    if result.status == "complete" and result.score is not None:
        study.tell(trial, result.score)
    else:
        study.tell(trial, state=TrialState.FAIL)


def trials_by_slot(study: optuna.Study) -> dict[tuple[int, int], FrozenTrial]:
    """Every trial keyed by (round, slot): the loop's test for 'already done'."""
    out: dict[tuple[int, int], FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        if "round" in t.user_attrs and "slot" in t.user_attrs:
            out[(int(t.user_attrs["round"]), int(t.user_attrs["slot"]))] = t
    return out


def to_record(t: FrozenTrial) -> TrialRecord:
    a = t.user_attrs
    arch = ArchConfig.model_validate(a["arch"]) if a.get("arch") else None
    status = a.get("status", "pending")
    if t.state == TrialState.RUNNING:
        status = "running"
    raw = a.get("raw")
    return TrialRecord(
        number=t.number,
        round=int(a.get("round", -1)),
        slot=int(a.get("slot", -1)),
        proposer=a.get("proposer", ""),
        status=status,
        arch=arch,
        raw=json.loads(raw) if isinstance(raw, str) and raw[:1] in "[{" else raw,
        rationale=a.get("rationale", ""),
        reason=a.get("reason", ""),
        gmacs=a.get("gmacs"),
        params_m=a.get("params_m"),
        score=t.value if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        score_name=a.get("score_name", "rfid"),
        extra={
            k: v
            for k, v in a.items()
            if k
            in (
                "scores",
                "train",
                "eval_dir",
                "wall_s",
                "origin",
                "device",
                "device_s",
                "fidelity",
                "screen",
                "warm_start",
                "measured_on",
            )  # fmt: skip
        },
    )


def load_memory(study: optuna.Study) -> list[TrialRecord]:
    """Every candidate of the study, in trial order."""
    return [to_record(t) for t in study.get_trials(deepcopy=False) if "round" in t.user_attrs]


def origin_counts(memory: list[TrialRecord], origins: tuple[str, ...] = ()) -> dict[str, int]:
    """How many candidates that went to training (not rejected, not screened out, not brought
    in by a warm start) came from each origin; every name in `origins` is listed, with 0 when
    none did."""
    counts = dict.fromkeys(origins, 0)
    for t in memory:
        if t.status not in UNTRAINED and not t.extra.get("warm_start"):
            origin = t.extra.get("origin") or t.proposer or "unknown"
            counts[origin] = counts.get(origin, 0) + 1
    return counts
