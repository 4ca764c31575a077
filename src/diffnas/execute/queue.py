"""Workers on one Optuna study: `diffnas worker --storage URL` evaluates enqueued candidates.

The queue is an Optuna study (`diffnas-queue`) in a database every machine reaches
(PostgreSQL). A candidate is a WAITING trial whose user attribute `job` holds its `EvalJob`;
a worker claims it atomically (Optuna's own WAITING -> RUNNING transition, which only one
claimant wins), beats Optuna's heartbeat while it evaluates, and tells the result (the score
as the trial's value, the `EvalResult` as its attribute `result`). A worker that vanishes
stops beating: after `grace_period` seconds any worker marks its trial stale (FAIL), and
Optuna's `RetryHeartbeatStaleTrialCallback` enqueues a copy of it, up to `max_retry` times,
so the candidate is re-queued, never lost; the copy resumes from the trainer's checkpoint
when the job's folder is on a shared file system. A result is told once: a worker whose trial
was already declared stale cannot tell it again.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from diffnas.execute.executors import (
    DEFAULT_MAX_RETRIES,
    RESULT_FILE,
    WORKER_COMMAND,
    EvalJob,
    EvalResult,
    run_job_process,
)
from diffnas.runs import read_json

QUEUE_STUDY = "diffnas-queue"


def open_queue(
    url: str,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 60,
    max_retry: int = DEFAULT_MAX_RETRIES,
    study_name: str = QUEUE_STUDY,
) -> optuna.Study:
    """The queue study on `url`, with heartbeats and re-queueing of stale trials."""
    storage = RDBStorage(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
    )
    return optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)


def enqueue_jobs(study: optuna.Study, jobs: Sequence[EvalJob]) -> None:
    """Put candidates in the queue as WAITING trials."""
    for job in jobs:
        study.enqueue_trial({}, user_attrs={"job": job.model_dump_json()})


def claim(study: optuna.Study) -> optuna.Trial | None:
    """The oldest WAITING trial, now RUNNING for this worker; None when none is left to claim."""
    storage = study._storage
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        # Beat first: Optuna never declares a RUNNING trial without a heartbeat stale, so a
        # worker killed between its claim and its first beat would leave the candidate RUNNING
        # for good. Beating a WAITING trial is harmless: its claimant beats again at once.
        storage.record_heartbeat(frozen._trial_id)
        # the storage's conditional update: of several workers racing, exactly one wins
        if storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
            return optuna.Trial(study, frozen._trial_id)
    return None


def _beat(storage: RDBStorage, trial_id: int, interval: float, stop: threading.Event) -> None:
    while True:
        storage.record_heartbeat(trial_id)
        if stop.wait(interval):
            return


def work(
    study: optuna.Study,
    *,
    max_jobs: int | None = None,
    exit_when_empty: bool = True,
    poll_s: float = 2.0,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
    log: Callable[[str], None] = print,
) -> int:
    """Evaluate queued candidates until the queue is empty (or `max_jobs`); return how many."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() or 10
    done = 0
    while max_jobs is None or done < max_jobs:
        fail_stale_trials(study)  # re-queue the candidates of vanished workers
        trial = claim(study)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if exit_when_empty and not running:
                break
            time.sleep(poll_s)  # others are running: one may vanish and be re-queued
            continue
        job = EvalJob.model_validate_json(study.trials[trial.number].user_attrs["job"])
        stop = threading.Event()
        beat = threading.Thread(
            target=_beat, args=(storage, trial._trial_id, interval, stop), daemon=True
        )
        beat.start()
        try:
            log(f"trial {trial.number}: evaluating {job.workdir}")
            result = evaluate_here(job, max_retries=max_retries, command=command)
        finally:
            stop.set()
            beat.join()
        if not tell_result(study, trial, result):
            log(f"trial {trial.number}: declared stale meanwhile; its copy is told instead")
            continue
        log(f"trial {trial.number}: {result.status} {result.score}")
        done += 1
    return done


def tell_result(study: optuna.Study, trial: optuna.Trial, result: EvalResult) -> bool:
    """Record `result` on the trial and finish it; False when the trial was declared stale first.

    Checking the state and then telling would leave a gap in which another worker fails the
    trial as stale; the storage's own transition locks the trial's row and refuses a finished
    trial, so of the stale marking and this tell exactly one happens.
    """
    finished = result.status == "complete" and result.score is not None
    finished = finished and not math.isnan(result.score)  # study.tell fails a NaN as well
    try:
        trial.set_user_attr("result", result.model_dump_json())
        study._storage.set_trial_state_values(
            trial._trial_id,
            TrialState.COMPLETE if finished else TrialState.FAIL,
            [result.score] if finished else None,
        )
    except UpdateFinishedTrialError:
        return False
    return True


def evaluate_here(
    job: EvalJob, *, max_retries: int, command: Sequence[str] = WORKER_COMMAND
) -> EvalResult:
    """Evaluate in a fresh worker process in the job's folder (the run folder on a shared
    file system). A result.json already there is taken as it is: a previous holder finished
    the candidate but was declared stale before it could tell it, so this is its copy."""
    done = Path(job.workdir) / RESULT_FILE
    if done.is_file():
        return EvalResult.model_validate(read_json(done))
    return run_job_process(job, max_retries=max_retries, command=command)


def results(study: optuna.Study) -> dict[str, dict]:
    """workdir -> result of every finished queued candidate (for the search that enqueued them)."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        if "result" in t.user_attrs:
            out[json.loads(t.user_attrs["job"])["workdir"]] = json.loads(t.user_attrs["result"])
    return out
