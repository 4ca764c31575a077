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
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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
    Executor,
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
    with warnings.catch_warnings():  # Optuna marks its heartbeat API experimental; we rely on it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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
        with warnings.catch_warnings():  # experimental in Optuna; we rely on it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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


class QueueExecutor(Executor):
    """`--executor queue`: a search's candidates wait in the queue study on `--storage` until
    a `diffnas worker` on any machine evaluates them.

    `submit` enqueues the job (paths made absolute: workers resolve them on their own
    machines, the run folder on a shared file system) and a polling thread resolves its future
    when a trial of that job carries a result. A candidate whose worker vanished is re-queued
    by the workers' stale-trial handling and stays pending; once its last copy failed stale
    with no retry left it is `failed` with that reason. A resumed search submits the same jobs
    again: one already queued is waited for, not queued twice.
    """

    name = "queue"
    concurrent = True

    def __init__(
        self,
        storage: str,
        *,
        workers: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        poll_s: float = 2.0,
        study_name: str = QUEUE_STUDY,
    ) -> None:
        self.study = open_queue(storage, max_retry=max_retries, study_name=study_name)
        self.max_retries = max_retries
        self.poll_s = poll_s
        self._slots = workers or 1
        self._pending: dict[str, Future[EvalResult]] = {}
        self._queued: set[str] | None = None  # workdirs in the queue, read at the first submit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def slots(self) -> int:
        """Candidates kept queued at once by the asynchronous schedule (`--workers`)."""
        return self._slots

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
        job = job.model_copy(
            update={
                "workdir": str(Path(job.workdir).resolve()),
                "cache_dir": str(Path(job.cache_dir).resolve()),
            }
        )
        future: Future[EvalResult] = Future()
        with self._lock:
            if self._queued is None:  # once: what a killed search had queued already
                self._queued = self._queued_workdirs()
            if job.workdir not in self._queued:
                enqueue_jobs(self.study, [job])
                self._queued.add(job.workdir)
            self._pending[job.workdir] = future
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll, name="diffnas-queue-poll", daemon=True
                )
                self._poller.start()
        return future

    def _queued_workdirs(self) -> set[str]:
        return {
            json.loads(t.user_attrs["job"])["workdir"]
            for t in self.study.get_trials(deepcopy=False)
            if "job" in t.user_attrs
        }

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                if not self._pending:
                    continue
                by_workdir: dict[str, list[optuna.trial.FrozenTrial]] = {}
                for t in self.study.get_trials(deepcopy=False):
                    if "job" in t.user_attrs:
                        workdir = json.loads(t.user_attrs["job"])["workdir"]
                        by_workdir.setdefault(workdir, []).append(t)
                for workdir, future in list(self._pending.items()):
                    result = self._outcome(by_workdir.get(workdir, []))
                    if result is not None:
                        del self._pending[workdir]
                        future.set_result(result)

    def _outcome(self, trials: list[optuna.trial.FrozenTrial]) -> EvalResult | None:
        """The job's result once a worker told it; `failed` once no copy is left to come."""
        for t in trials:
            if "result" in t.user_attrs:
                return EvalResult.model_validate_json(t.user_attrs["result"])
        if not trials or not all(t.state == TrialState.FAIL for t in trials):
            return None  # still queued or running
        history = RetryHeartbeatStaleTrialCallback.retry_history(trials[-1])
        if len(history) < self.max_retries:
            return None  # the stale marking re-queues a copy next
        return EvalResult(
            status="failed",
            error=f"its worker vanished (no heartbeat) on each of {len(trials)} attempts",
        )

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        self._stop.clear()
