"""The search memory stored as an Optuna study (SQLite in the run folder, or any DB URL).

Each candidate is one trial:
- params: the architecture (`diffnas.space.params`), when it parsed into the space;
- value: the proxy score (minimised); with two objectives (`--objectives score,latency` or
  `score,macs`) the values [score, cost], both minimised, the cost being the latency measured
  at the gate (ms per forward pass) or the GMACs;
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

import contextlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from diffnas import storage
from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.execute.job import EvalResult
from diffnas.gate.entry import RoundEntry
from diffnas.gate.memory import UNTRAINED, TrialRecord, TrialStatus
from diffnas.layout import STUDY_FILE
from diffnas.space import params as arch_params
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace

STUDY_NAME = "diffnas"


def storage_url(run_dir: Path, url: str | None) -> str:
    return url if url is not None else f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"


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
    run_dir: Path,
    url: str | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    *,
    study_name: str | None = None,
    read_only: bool = False,
    objectives: int = 1,
) -> optuna.Study:
    """Create or load the run's study (`pruner`: successive halving, `diffnas.search.halving`).

    `study_name`: the search's own study in `url` (None: "diffnas", the name in a run folder's
    own study.db and in searches from before each got its own). `read_only`: for commands that
    only read (`status`, `report`, `export`): a study that is not there is refused, never
    created, and a SQLite file is opened so that nothing can be written to it. `objectives`: 2
    for a multi-objective search; a study loaded keeps its own directions.
    """
    name = study_name or STUDY_NAME
    option = "--storage" if url is not None else "the run folder's study"
    resolved = storage.resolve_url(storage_url(run_dir, url), option)
    if read_only:
        names = storage.study_names(resolved, option)
        if name not in (names or []):
            raise _no_study(run_dir, url, name, names)
    backend = storage.rdb_storage(resolved, read_only=read_only, option=option)
    try:
        with quiet_optuna():
            if read_only:
                return optuna.load_study(study_name=name, storage=backend, pruner=pruner)
            return optuna.create_study(
                study_name=name, storage=backend, directions=["minimize"] * objectives,
                pruner=pruner,
                load_if_exists=True,
            )  # fmt: skip
    except SQLAlchemyError as err:
        raise storage.storage_error(err, resolved, option) from None


def _no_study(run_dir: Path, url: str | None, name: str, names: list[str] | None) -> UserError:
    if url is None:
        file = run_dir / STUDY_FILE
        state = "has not started there" if not file.exists() else "left it empty or damaged"
        return UserError(
            f"{str(run_dir)!r}: {STUDY_FILE} holds no study (the search {state})",
            field="run_dir",
        )
    held = ", ".join(map(repr, names or [])) or "none"
    return UserError(
        f"--storage {storage.shown(url)!r} holds no study {name!r} of the search in "
        f"{str(run_dir)!r} (its studies: {held}); the search has not started, or its database "
        "was emptied",
        field="storage",
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
    study: optuna.Study,
    trial: optuna.Trial,
    result: EvalResult,
    eval_dir: str,
    cost: float | None = None,
) -> None:
    """Tell the outcome of a running trial: COMPLETE with its score (and `cost`, the second
    objective's value, in a multi-objective study), or FAIL with its status."""
    record_result(trial, result, eval_dir)
    trial.set_user_attr("status", result.status)
    if result.status == "complete" and result.score is not None:
        study.tell(trial, result.score if cost is None else [result.score, cost])
    else:
        study.tell(trial, state=TrialState.FAIL)


class Fidelity(BaseModel):
    steps: int = Field(ge=0)
    of: int = Field(ge=1)


class TrialAttrs(BaseModel):
    """A candidate trial's user attributes as the search writes them (`RoundEntry.trial_attrs`,
    `record_result`): what every reader of the study relies on."""

    model_config = ConfigDict(extra="allow")

    round: int = Field(ge=-1)  # -1: a warm-start trial measured by an earlier search
    slot: int = Field(ge=0)
    proposer: str = ""
    origin: str | None = None
    status: TrialStatus = "pending"
    rationale: str = ""
    raw: Any = None
    reason: str | None = None
    arch: ArchConfig | None = None
    gmacs: float | None = None
    params_m: float | None = None
    latency_ms: float | None = None
    score_name: str = "rfid"
    scores: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    eval_dir: str | None = None
    wall_s: float | None = None
    device: str | None = None
    device_s: float | None = None
    fidelity: Fidelity | None = None
    screen: dict[str, Any] | None = None  # --screen: the screener's verdict
    warm_start: dict[str, Any] | None = None  # where it was measured: run, trial, data
    measured_on: str | None = None  # its data, when not this search's


def trial_attrs(t: FrozenTrial, where: str = "the study") -> TrialAttrs:
    """A candidate trial's attributes, checked; one that does not validate (a study changed
    outside diffnas) is a `UserError` naming the trial and the attribute."""
    try:
        return TrialAttrs.model_validate(t.user_attrs)
    except ValidationError as err:
        raise UserError(
            f"{pydantic_message(err, f'attributes of trial {t.number} in {where}')}; "
            "the study was changed outside diffnas: restore it or start a new run",
            field=first_field(err, "study"),
        ) from None


def describe(study: optuna.Study) -> str:
    """Where a study is, for messages: its name and storage (password hidden)."""
    url = getattr(getattr(study._storage, "_backend", study._storage), "url", None)
    return f"study {study.study_name!r}" + (f" of {storage.shown(url)!r}" if url else "")


def trials_by_slot(study: optuna.Study) -> dict[tuple[int, int], FrozenTrial]:
    """Every trial keyed by (round, slot): the loop's test for 'already done'."""
    out: dict[tuple[int, int], FrozenTrial] = {}
    where = describe(study)
    for t in study.get_trials(deepcopy=False):
        if "round" in t.user_attrs and "slot" in t.user_attrs:
            a = trial_attrs(t, where)
            out[(a.round, a.slot)] = t
    return out


def to_record(t: FrozenTrial, where: str = "the study") -> TrialRecord:
    a = trial_attrs(t, where)
    status = "running" if t.state == TrialState.RUNNING else a.status
    raw = a.raw
    if isinstance(raw, str) and raw[:1] in "[{":
        # cut at 4000 characters when stored: then shown as the text it is
        with contextlib.suppress(ValueError, RecursionError):
            raw = json.loads(raw)
    return TrialRecord(
        number=t.number,
        round=a.round,
        slot=a.slot,
        proposer=a.proposer,
        status=status,
        arch=a.arch,
        raw=raw,
        rationale=a.rationale,
        reason=a.reason or "",
        gmacs=a.gmacs,
        params_m=a.params_m,
        latency_ms=a.latency_ms,
        # the first value: the score, alone or with the cost of a multi-objective study
        score=t.values[0]
        if t.values and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        else None,
        score_name=a.score_name,
        origin=a.origin,
        scores=a.scores,
        train=a.train,
        eval_dir=a.eval_dir,
        device=a.device,
        # seconds of the device; trials from before it was measured have their wall time only
        device_s=a.device_s if a.device_s is not None else a.wall_s,
        fidelity=(a.fidelity.steps, a.fidelity.of) if a.fidelity is not None else None,
        screen=a.screen,
        warm_start=a.warm_start,
        measured_on=a.measured_on,
    )


def load_memory(study: optuna.Study) -> list[TrialRecord]:
    """Every candidate of the study, in trial order."""
    where = describe(study)
    trials = study.get_trials(deepcopy=False)
    return [to_record(t, where) for t in trials if "round" in t.user_attrs]


def origin_counts(memory: list[TrialRecord], origins: tuple[str, ...] = ()) -> dict[str, int]:
    """How many candidates that went to training (not rejected, not screened out, not brought
    in by a warm start) came from each origin; every name in `origins` is listed, with 0 when
    none did."""
    counts = dict.fromkeys(origins, 0)
    for t in memory:
        if t.status not in UNTRAINED and not t.warm_start:
            # trials of searches from before origins were recorded count under their proposer
            origin = t.origin or t.proposer or "unknown"
            counts[origin] = counts.get(origin, 0) + 1
    return counts
