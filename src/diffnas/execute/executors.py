"""Executors run `evaluate_candidate(job)`; the result is also left in `workdir/result.json`.

Every executor offers `run(job)` (one job, blocking), `submit(job) -> Future` and
`run_many(jobs)`, which yields `(index, result)` as jobs finish. The sequential executors
(inline, subprocess, table) start a job only when the caller asks for its result, so a search
tells each result before the next candidate starts; the concurrent ones (pool, ray, queue)
start every job at once and yield in the order they finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

from diffnas.childproc import describe_exit, die_with_parent
from diffnas.errors import UserError
from diffnas.execute.job import EvalJob, EvalResult, evaluate_candidate
from diffnas.layout import RESULT_FILE
from diffnas.runs import append_jsonl, read_file, write_json
from diffnas.space.arch import ArchConfig

JOB_FILE = "job.json"
USER_ERROR_FILE = "user_error.txt"  # a child's configuration error, raised again in the parent
ATTEMPTS_FILE = "attempts.jsonl"  # one line per worker process that died without a result
USER_ERROR_EXIT = 2
WORKER_COMMAND = (sys.executable, "-m", "diffnas.execute.worker")
DEFAULT_MAX_RETRIES = 2

__all__ = [
    "EvalJob", "EvalResult", "Executor", "make_executor", "run_job_process", "run_pinned",
    "run_worker_process",
]  # fmt: skip


def read_result(path: Path) -> EvalResult:
    """A finished evaluation's `result.json`, checked (`diffnas.runs.read_file`)."""
    return read_file(
        path, EvalResult, "trial result", fix="delete it to evaluate the candidate again"
    )


def finished_future(result: EvalResult) -> Future[EvalResult]:
    future: Future[EvalResult] = Future()
    future.set_result(result)
    return future


class Executor:
    """Runs evaluation jobs. A finished job's result.json is reused, never recomputed."""

    name = "base"
    concurrent = False  # True: submit() starts the job now, in parallel with others

    @property
    def slots(self) -> int:
        """How many jobs run at once at most: the asynchronous search keeps this many in flight."""
        return 1

    def run(self, job: EvalJob) -> EvalResult:
        return self.submit(job).result()

    def submit(self, job: EvalJob) -> Future[EvalResult]:
        """Start `job` (a sequential executor runs it now) and return its future result."""
        workdir = Path(job.workdir)
        done = workdir / RESULT_FILE
        if done.is_file():
            return finished_future(read_result(done))
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(workdir / JOB_FILE, job.model_dump(mode="json"))
        outer: Future[EvalResult] = Future()

        def save(inner: Future[EvalResult]) -> None:
            try:
                result = inner.result()
                write_json(done, result.model_dump(mode="json"))
            except BaseException as err:  # a UserError: the caller sees it from .result()
                outer.set_exception(err)
            else:
                outer.set_result(result)

        self._submit(job).add_done_callback(save)
        return outer

    def _submit(self, job: EvalJob) -> Future[EvalResult]:
        """Default: evaluate now, in the caller's thread (the sequential executors)."""
        future: Future[EvalResult] = Future()
        try:
            future.set_result(self._run(job))
        except BaseException as err:
            future.set_exception(err)
        return future

    def _run(self, job: EvalJob) -> EvalResult:
        raise NotImplementedError

    def run_many(self, jobs: Sequence[EvalJob]) -> Iterator[tuple[int, EvalResult]]:
        """Evaluate `jobs`; yield `(index, result)` as each finishes."""
        if not self.concurrent:
            for index, job in enumerate(jobs):  # lazily: one job, told, then the next
                yield index, self.run(job)
            return
        futures = {self.submit(job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        """Release processes, threads or a cluster connection (nothing for the sequential ones)."""

    def admits(self, arch: ArchConfig) -> str | None:
        """None if this executor can evaluate `arch`; else why not, one sentence for the gate
        (a table answers only the architectures it holds)."""
        return None


class InlineExecutor(Executor):
    """In this process: no start-up cost; a hard crash (segfault) takes the search with it."""

    name = "inline"

    def _run(self, job: EvalJob) -> EvalResult:
        return evaluate_candidate(job)


def run_worker_process(
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
    device: str | None = None,
) -> EvalResult:
    """Evaluate `workdir/job.json` in a fresh child process (`command WORKDIR`).

    A child that dies without a result (killed, out of memory, a segfault) is started again,
    up to `max_retries` times; the trainer resumes from its checkpoint. After that the job is
    `failed` with the reason. A configuration error in the child is raised here as UserError.
    """
    workdir = Path(workdir)
    result_file = workdir / RESULT_FILE
    start = time.perf_counter()
    reasons: list[str] = []
    for attempt in range(max_retries + 1):
        with open(workdir / "worker.log", "a") as log:
            proc = subprocess.run(
                [*command, str(workdir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        if result_file.is_file():
            return read_result(result_file)
        user_error = workdir / USER_ERROR_FILE
        if proc.returncode == USER_ERROR_EXIT and user_error.is_file():
            raise UserError(user_error.read_text())
        reason = f"worker process {describe_exit(proc.returncode)} before writing its result"
        reasons.append(reason)
        append_jsonl(
            workdir / ATTEMPTS_FILE,
            {
                "attempt": attempt,
                "returncode": proc.returncode,
                "reason": reason,
                "time": time.time(),
            },
        )
    wall = round(time.perf_counter() - start, 3)
    return EvalResult(
        status="failed",
        error=f"{reasons[-1]} on each of {len(reasons)} attempts; see {workdir / 'worker.log'}",
        wall_s=wall,
        device=device,
    )


def run_job_process(
    job: EvalJob,
    *,
    env: dict[str, str] | None = None,
    device: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
) -> EvalResult:
    """Write `job` as job.json into its folder and evaluate it there in a fresh worker process."""
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / JOB_FILE, job.model_dump(mode="json"))
    return run_worker_process(
        workdir, env=env, max_retries=max_retries, command=command, device=device
    )


def run_pinned(
    job: EvalJob,
    *,
    gpu: str | None,
    share: float = 1.0,
    threads: int = 1,
    max_retries: int = DEFAULT_MAX_RETRIES,
    command: Sequence[str] = WORKER_COMMAND,
) -> EvalResult:
    """Evaluate `job` in a fresh worker process pinned to one device (the pool's and Ray's way).

    `gpu`: the card as a `CUDA_VISIBLE_DEVICES` entry; the child sees only that card, as its
    `cuda:0`, so the job runs on `cuda` and records `share` of the card's time. None: the child
    sees no card and runs on the CPU with `threads` torch (and BLAS) threads.
    """
    if gpu is None:
        label, count = "cpu", str(threads)
        env = env_with(
            CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=count, MKL_NUM_THREADS=count,
            DIFFNAS_TORCH_THREADS=count, DIFFNAS_DEVICE_LABEL=label,
        )  # fmt: skip
    else:
        label = f"cuda:{gpu}"
        env = env_with(
            CUDA_VISIBLE_DEVICES=gpu, DIFFNAS_DEVICE_LABEL=label,
            DIFFNAS_DEVICE_SHARE=f"{share:.4f}",
        )  # fmt: skip
        job = job.model_copy(update={"spec": job.spec.model_copy(update={"device": "cuda"})})
    return run_job_process(job, env=env, device=label, max_retries=max_retries, command=command)


def check_trials_per_gpu(trials_per_gpu: int) -> None:
    if trials_per_gpu < 1:
        raise UserError(
            f"--trials-per-gpu must be at least 1, got {trials_per_gpu}.", field="trials_per_gpu"
        )


class SubprocessExecutor(Executor):
    """In a child process (`python -m diffnas.execute.worker WORKDIR`): isolates crashes and memory."""

    name = "subprocess"

    def __init__(
        self, max_retries: int = DEFAULT_MAX_RETRIES, command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        self.max_retries = max_retries
        self.command = tuple(command)

    def _run(self, job: EvalJob) -> EvalResult:
        return run_worker_process(
            Path(job.workdir), max_retries=self.max_retries, command=self.command
        )


EXECUTORS = ("inline", "subprocess", "pool", "ray", "queue")
TABLE_EXECUTOR = "table:NAME|PATH"  # a lookup in a table (`diffnas.execute.table_executor`)


def make_executor(name: str, **options: Any) -> Executor:
    """The executor `name`; `options` are its settings (None values take the defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name.startswith("table:"):
        from diffnas.execute.table_executor import TableExecutor, load_executor_table

        return TableExecutor(load_executor_table(name))
    if name == "inline":
        return InlineExecutor()
    if name == "subprocess":
        return SubprocessExecutor(**_take(options, "max_retries", "command"))
    if name == "pool":
        from diffnas.execute.pool import PoolExecutor

        return PoolExecutor(
            **_take(options, "max_retries", "command", "workers", "trials_per_gpu", "gpus")
        )
    if name == "ray":
        from diffnas.execute.ray_executor import RayExecutor

        return RayExecutor(
            **_take(options, "max_retries", "command", "ray_address", "trials_per_gpu", "workers")
        )
    if name == "queue":
        from diffnas.execute.queue import QueueExecutor

        check_executor(name, options.get("storage"))
        return QueueExecutor(**_take(options, "storage", "workers", "max_retries"))
    raise UserError(
        f"executor {name!r} is not known; allowed: {', '.join((*EXECUTORS, TABLE_EXECUTOR))}.",
        field="executor",
    )


def check_executor(name: str, storage: str | None = None, ray_address: str | None = None) -> None:
    """Refuse an executor whose package, database, cluster or table is missing, before any run
    folder exists."""
    if name.startswith("table:"):
        from diffnas.execute.table_executor import load_executor_table

        load_executor_table(name)
    if ray_address is not None and name != "ray":
        raise UserError(
            f"--ray-address {ray_address!r} is for --executor ray, not {name}", field="ray_address"
        )
    if name == "queue" and not storage:
        raise UserError(
            "--executor queue needs --storage URL: the database (PostgreSQL for workers on "
            "several machines) whose queue the `diffnas worker` processes pull from.",
            field="storage",
        )
    if name == "ray":
        from diffnas.execute.ray_executor import check_ray_address, import_ray

        check_ray_address(ray_address)
        import_ray()


def _take(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: options[k] for k in names if k in options}


def env_with(**values: str) -> dict[str, str]:
    """This process's environment plus `values` (a child's device pinning and thread counts)."""
    return {**os.environ, **values}
