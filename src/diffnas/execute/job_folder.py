"""A job's folder, read and written here only: its `job.json` (the inputs, written once, before
the evaluation starts) and its `result.json` (the outcome).

A folder that holds a `result.json` is a finished job: every executor, every queue worker and
the supervisor of a worker process take that result as it is and never evaluate the job again
(a resumed search, a copy of a queued candidate whose holder finished but was declared stale).
The other files a worker process leaves beside them are named here too.
"""

from __future__ import annotations

from pathlib import Path

from diffnas.execute.job import EvalJob, EvalResult
from diffnas.layout import JOB_FILE, RESULT_FILE
from diffnas.runs import read_file, write_json

USER_ERROR_FILE = "user_error.txt"  # a child's configuration error, raised again in the parent
USER_ERROR_EXIT = 2  # a worker's exit code for a configuration error (in USER_ERROR_FILE)
ATTEMPTS_FILE = "attempts.jsonl"  # one line per worker process that died without a result
WORKER_OUTPUT = "worker.log"  # the worker processes' stdout and stderr
WORKER_RUNS = "worker.jsonl"  # one line per worker process that finished: when, where, on what

__all__ = [
    "ATTEMPTS_FILE", "JOB_FILE", "RESULT_FILE", "USER_ERROR_EXIT", "USER_ERROR_FILE", "WORKER_OUTPUT", "WORKER_RUNS",
    "finished_result", "has_job", "read_job", "write_job", "write_result",
]  # fmt: skip


def write_job(job: EvalJob) -> Path:
    """Create the job's folder and write its `job.json`; the folder."""
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / JOB_FILE, job.model_dump(mode="json"))
    return workdir


def has_job(workdir: str | Path) -> bool:
    """Whether `job.json` is in `workdir` as this machine sees it (a worker on a machine that
    does not share the run folder sees none)."""
    return (Path(workdir) / JOB_FILE).is_file()


def read_job(workdir: str | Path) -> EvalJob:
    """The job in `workdir/job.json`, checked (`diffnas.runs.read_file`)."""
    return read_file(
        Path(workdir) / JOB_FILE,
        EvalJob,
        "evaluation job",
        fix="its search writes it again on --resume",
    )


def finished_result(workdir: str | Path) -> EvalResult | None:
    """The result of a job that finished in `workdir` (its `result.json`, checked), else None."""
    path = Path(workdir) / RESULT_FILE
    if not path.is_file():
        return None
    return read_file(
        path, EvalResult, "trial result", fix="delete it to evaluate the candidate again"
    )


def write_result(workdir: str | Path, result: EvalResult) -> None:
    """Write `result` as the job's `result.json`: from now on the job is finished."""
    write_json(Path(workdir) / RESULT_FILE, result.model_dump(mode="json"))


def forget_result(workdir: str | Path) -> None:
    """Remove a job's result so that the next submit evaluates it again (a table re-runs a
    run that failed in an earlier sitting); its training folder stays and is resumed."""
    (Path(workdir) / RESULT_FILE).unlink(missing_ok=True)
