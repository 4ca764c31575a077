"""Workers on one Optuna study: `diffnas worker --storage URL` evaluates enqueued candidates.

The queue is an Optuna study (`diffnas-queue`) in a database every machine reaches
(PostgreSQL). A candidate is a WAITING trial whose user attribute `job` holds its `EvalJob`;
a worker claims it atomically (Optuna's own WAITING -> RUNNING transition, which only one
claimant wins), beats Optuna's heartbeat while it evaluates, and tells the result (the score
as the trial's value, the `EvalResult` as its attribute `result`). A result is told once: a
worker whose trial was already declared stale cannot tell it again.

A worker that vanishes stops beating. Before each claim every worker
1. marks the trials whose heartbeat is older than `grace_period` stale: each gets its
   `reason` ("its worker vanished ...") while it is still RUNNING, then FAIL (one locked
   transition, so a late tell and the marking never both happen);
2. re-queues every stale trial that has retries left and no copy yet: a WAITING copy holding
   the same job, with `copy_of` (the stale trial's number) and `retry_history` (every earlier
   attempt) in its system attributes. A trial re-queued `max_retry` times stays FAIL, its
   reason saying so.
Step 2 looks at the study, not at what step 1 did, so a worker killed between the two leaves
the candidate to the next worker's step 2: never lost. Two workers doing step 2 at once may
both add a copy; a copy is evaluated only if no lower-numbered copy of the same trial exists
(the claim checks), so the candidate is still evaluated once, the other copy failed as
`duplicate_of`. A copy resumes from the trainer's checkpoint when the job's folder is on a
shared file system, and takes a result.json a late holder left there instead of evaluating.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from diffnas import storage
from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.job import EvalJob, EvalResult
from diffnas.execute.job_folder import finished_result, has_job, write_job
from diffnas.execute.process import DEFAULT_MAX_RETRIES, WORKER_COMMAND, run_worker_process

QUEUE_STUDY = "diffnas-queue"
COPY_OF, HISTORY = "copy_of", "retry_history"  # a copy's system attributes
REASON, DUPLICATE = "reason", "duplicate_of"  # why a trial failed without a result


def open_queue(
    url: str,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 60,
    study_name: str = QUEUE_STUDY,
    create: bool = True,
    option: str = "--storage",
) -> optuna.Study:
    """The queue study on `url`, with heartbeats (a worker's `grace_period` decides staleness).

    `create=False` (a worker): a storage that holds other studies but not the queue is a
    search's own study database, and is refused rather than given a queue it never asked for;
    a new, empty database gets the queue (workers may start before the search).
    """
    resolved = storage.resolve_url(url, option)
    held = storage.study_names(resolved, option)
    if not create and held and study_name not in held:
        raise UserError(
            f"{option} {storage.shown(url)!r} holds the studies {', '.join(map(repr, held))} but "
            f"no queue {study_name!r}: it is a search's study database, not a queue. Give the "
            "--storage of a search started with --executor queue (or a new database)",
            field="storage",
        )
    backend = storage.rdb_storage(
        resolved, option=option, heartbeat_interval=heartbeat_interval, grace_period=grace_period
    )
    try:
        return optuna.create_study(study_name=study_name, storage=backend, load_if_exists=True)
    except SQLAlchemyError as err:
        raise storage.storage_error(err, resolved, option) from None


def enqueue_jobs(study: optuna.Study, jobs: Sequence[EvalJob]) -> None:
    """Put candidates in the queue as WAITING trials."""
    for job in jobs:
        study.enqueue_trial({}, user_attrs={"job": job.model_dump_json()})


def _first_copy(study: optuna.Study, frozen: FrozenTrial) -> int | None:
    """The number of a lower-numbered copy of the same stale trial, when `frozen` is a copy."""
    original = frozen.system_attrs.get(COPY_OF)
    if original is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if t.number < frozen.number and t.system_attrs.get(COPY_OF) == original:
            return t.number
    return None


def claim(study: optuna.Study) -> optuna.Trial | None:
    """The oldest WAITING trial, now RUNNING for this worker; None when none is left to claim."""
    backend = study._storage
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        # Beat first: Optuna never declares a RUNNING trial without a heartbeat stale, so a
        # worker killed between its claim and its first beat would leave the candidate RUNNING
        # for good. Beating a WAITING trial is harmless: its claimant beats again at once.
        backend.record_heartbeat(frozen._trial_id)
        # the storage's conditional update: of several workers racing, exactly one wins
        if not backend.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
            continue
        first = _first_copy(study, frozen)
        if first is None:
            return optuna.Trial(study, frozen._trial_id)
        # two workers re-queued the same stale trial at once: only the first copy is evaluated
        backend.set_trial_user_attr(frozen._trial_id, DUPLICATE, first)
        backend.set_trial_user_attr(frozen._trial_id, REASON, f"a second copy of trial {first}")
        backend.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
    return None


def _beat(backend: object, trial_id: int, interval: float, stop: threading.Event) -> None:
    while True:
        backend.record_heartbeat(trial_id)  # type: ignore[attr-defined]
        if stop.wait(interval):
            return


def attempts(t: FrozenTrial) -> int:
    """Which attempt at its candidate the trial is: 1 for the first, 2 for its first copy..."""
    return len(t.system_attrs.get(HISTORY, [])) + 1


def mark_stale(study: optuna.Study, max_retry: int) -> list[int]:
    """Step 1: FAIL every RUNNING trial whose worker stopped beating, its `reason` written
    first; the numbers of the trials this call failed."""
    backend = study._storage
    rdb = getattr(backend, "_backend", backend)  # Optuna caches an RDBStorage in front of it
    interval = backend.get_heartbeat_interval()
    grace = getattr(rdb, "grace_period", None) or (2 * interval if interval else None)
    failed = []
    for trial_id in backend._get_stale_trial_ids(study._study_id):
        frozen = backend.get_trial(trial_id)
        n = attempts(frozen)
        left = "re-queued" if n <= max_retry else f"no retry left (of {max_retry})"
        reason = f"its worker vanished (no heartbeat for {grace} s) on attempt {n}; {left}"
        try:
            backend.set_trial_user_attr(trial_id, REASON, reason)
            if backend.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(frozen.number)
        except UpdateFinishedTrialError:
            continue  # told meanwhile, or failed by another worker
    return failed


def stale_failed(t: FrozenTrial) -> bool:
    """A trial failed because its worker vanished (not told a result, not a duplicate copy)."""
    return (
        t.state == TrialState.FAIL
        and REASON in t.user_attrs
        and "result" not in t.user_attrs
        and DUPLICATE not in t.user_attrs
    )


def requeue_stale(study: optuna.Study, max_retry: int) -> list[int]:
    """Step 2, idempotent: a WAITING copy of every stale trial with retries left that has no
    copy yet; the numbers of the trials copied."""
    trials = study.get_trials(deepcopy=False)
    copied = {t.system_attrs[COPY_OF] for t in trials if COPY_OF in t.system_attrs}
    requeued = []
    for t in trials:
        if not stale_failed(t) or attempts(t) > max_retry or t.number in copied:
            continue
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                user_attrs={"job": t.user_attrs["job"]},
                system_attrs={
                    COPY_OF: t.number,
                    HISTORY: [*t.system_attrs.get(HISTORY, []), t.number],
                },
            )
        )
        requeued.append(t.number)
    return requeued


def recover(study: optuna.Study, max_retry: int) -> None:
    """Both steps: what every worker does before it claims."""
    mark_stale(study, max_retry)
    requeue_stale(study, max_retry)


def work(
    study: optuna.Study,
    *,
    max_jobs: int | None = None,
    exit_when_empty: bool = True,
    poll_s: float = 2.0,
    max_retries: int = DEFAULT_MAX_RETRIES,
    max_retry: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
    log: Callable[[str], None] = print,
) -> int:
    """Evaluate queued candidates until the queue is empty (or `max_jobs`); return how many.

    `max_retries`: a killed evaluation process is started again this often (the pool's rule);
    `max_retry`: a candidate whose worker vanished is re-queued this often."""
    backend = study._storage
    interval = backend.get_heartbeat_interval() or 10
    done = 0
    while max_jobs is None or done < max_jobs:
        recover(study, max_retry)  # the candidates of vanished workers, queued again
        trial = claim(study)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if exit_when_empty and not running:
                break
            time.sleep(poll_s)  # others are running: one may vanish and be re-queued
            continue
        stop = threading.Event()
        beat = threading.Thread(
            target=_beat, args=(backend, trial._trial_id, interval, stop), daemon=True
        )
        beat.start()
        try:
            result = _evaluate_claimed(study, trial, max_retries, command, log)
        finally:
            stop.set()
            beat.join()
        if not tell_result(study, trial, result):
            log(f"trial {trial.number}: declared stale meanwhile; its copy is told instead")
            continue
        log(f"trial {trial.number}: {result.status} {result.score}")
        done += 1
    return done


def _evaluate_claimed(
    study: optuna.Study,
    trial: optuna.Trial,
    max_retries: int,
    command: Sequence[str],
    log: Callable[[str], None],
) -> EvalResult:
    """The claimed trial's evaluation; a job attribute or result.json that does not validate
    (changed outside diffnas) fails that candidate with the reason, not the worker."""
    try:
        job = EvalJob.model_validate_json(study.trials[trial.number].user_attrs["job"])
    except (KeyError, ValidationError) as err:
        return EvalResult(status="failed", error=f"its queued job is damaged: {err}"[:2000])
    log(f"trial {trial.number}: evaluating {job.workdir}")
    try:
        return evaluate_here(job, max_retries=max_retries, command=command)
    except UserError as err:
        return EvalResult(status="failed", error=str(err)[:2000])


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
    the candidate but was declared stale before it could tell it, so this is its copy. The
    job.json is the one the search wrote; a machine that does not see it writes its own."""
    finished = finished_result(job.workdir)
    if finished is not None:
        return finished
    if not has_job(job.workdir):
        write_job(job)
    return run_worker_process(job.workdir, max_retries=max_retries, command=command)


def _workdir(t: FrozenTrial) -> str | None:
    """The job folder of a queued trial (None for a job attribute that is not one)."""
    try:
        return str(json.loads(t.user_attrs["job"])["workdir"])
    except (KeyError, TypeError, ValueError):
        return None


def results(study: optuna.Study) -> dict[str, dict]:
    """workdir -> result of every finished queued candidate (for the search that enqueued them)."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        workdir = _workdir(t)
        if workdir is not None and "result" in t.user_attrs:
            out[workdir] = json.loads(t.user_attrs["result"])
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
        self.study = open_queue(storage, study_name=study_name)
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

    def prepare(self, job: EvalJob) -> EvalJob:
        """Paths made absolute: a worker resolves them on its own machine."""
        return job.model_copy(
            update={
                "workdir": str(Path(job.workdir).resolve()),
                "cache_dir": str(Path(job.cache_dir).resolve()),
            }
        )

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
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
        return {w for t in self.study.get_trials(deepcopy=False) if (w := _workdir(t))}

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                if not self._pending:
                    continue
                by_workdir: dict[str, list[optuna.trial.FrozenTrial]] = {}
                for t in self.study.get_trials(deepcopy=False):
                    if (workdir := _workdir(t)) is not None:
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
                try:
                    return EvalResult.model_validate_json(t.user_attrs["result"])
                except ValidationError as err:
                    return EvalResult(
                        status="failed", error=f"its told result is damaged: {err}"[:2000]
                    )
        attempts_made = [t for t in trials if DUPLICATE not in t.user_attrs]
        if not attempts_made or not all(stale_failed(t) for t in attempts_made):
            return None  # still queued or running
        last = max(attempts_made, key=lambda t: t.number)
        if attempts(last) <= self.max_retries:
            return None  # a worker re-queues a copy next
        return EvalResult(
            status="failed",
            error=f"{last.user_attrs[REASON]} (queue trials "
            f"{', '.join(str(t.number) for t in attempts_made)})",
        )

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        self._stop.clear()
